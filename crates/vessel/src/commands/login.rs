//! `vessel login` and `vessel logout`: registry credentials, checked against the registry
//! and kept as Docker keeps them (`vessel_image::credentials`), so that `pull`, `push`
//! and `build` use them, and `docker` and `vessel` share one login.

use std::io::{BufRead, IsTerminal, Read, Write};

use vessel_image::credentials::{self, Credentials};

use crate::cli::LoginArgs;
use crate::{CmdResult, Failure};

/// Docker's status for a failed login or logout.
const EXIT_LOGIN: u8 = 1;

fn fail(message: impl std::fmt::Display) -> Failure {
    Failure::new(EXIT_LOGIN, message.to_string())
}

/// Reads one line from the terminal, echoing it unless `secret`.
fn prompt(label: &str, secret: bool) -> Result<String, Failure> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    eprint!("{label}: ");
    let _ = std::io::stderr().flush();
    let stdin = std::io::stdin();
    let saved = if secret {
        let saved = tcgetattr(&stdin).map_err(|e| fail(format!("read the {label}: {e}")))?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet)
            .map_err(|e| fail(format!("read the {label}: {e}")))?;
        Some(saved)
    } else {
        None
    };
    let mut line = String::new();
    let got = stdin.lock().read_line(&mut line);
    if let Some(saved) = saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
        eprintln!();
    }
    got.map_err(|e| fail(format!("read the {label}: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `vessel login [SERVER]`.
pub fn login(a: &LoginArgs) -> CmdResult {
    let host = credentials::registry_host(a.server.as_deref());
    if a.password.is_some() && a.password_stdin {
        return Err(fail(
            "--password and --password-stdin are mutually exclusive",
        ));
    }
    let tty = std::io::stdin().is_terminal();
    let username = match &a.username {
        Some(u) => u.clone(),
        None if a.password_stdin => {
            return Err(fail("--password-stdin needs --username"));
        }
        None if tty => prompt("Username", false)?,
        None => {
            return Err(fail(
                "Cannot perform an interactive login from a non TTY device: give --username and --password-stdin",
            ))
        }
    };
    let secret = match (&a.password, a.password_stdin) {
        (Some(p), _) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p.clone()
        }
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .take(64 << 10)
                .read_to_string(&mut s)
                .map_err(|e| fail(format!("read the password from standard input: {e}")))?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) if tty => prompt("Password", true)?,
        (None, false) => {
            return Err(fail(
                "Cannot perform an interactive login from a non TTY device: give --password-stdin",
            ))
        }
    };
    if username.is_empty() || secret.is_empty() {
        return Err(fail("login needs a username and a password"));
    }
    let creds = Credentials { username, secret };
    vessel_image::registry::check_login(&host, &creds, a.insecure).map_err(|e| {
        fail(format!(
            "Error response from registry: login to {host}: {e}"
        ))
    })?;
    let kept = credentials::store(&host, &creds).map_err(fail)?;
    eprintln!("Credentials kept in {kept}");
    println!("Login Succeeded");
    Ok(0)
}

/// `vessel logout [SERVER]`.
pub fn logout(given: Option<&str>) -> CmdResult {
    let host = credentials::registry_host(given);
    if credentials::erase(&host).map_err(fail)? {
        println!(
            "Removing login credentials for {}",
            credentials::server_key(&host)
        );
    } else {
        println!("Not logged in to {}", credentials::server_key(&host));
    }
    Ok(0)
}
