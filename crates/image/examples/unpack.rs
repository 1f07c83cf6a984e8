//! Unpacks layer tars into fresh directories with vessel's unpacker, as the store does
//! (used by `bench/unpack-layers` to compare with `tar -x`).
//!
//! usage: unpack DEST LAYER.tar[.gz|.zst]...

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(dest) = args.next().map(PathBuf::from) else {
        eprintln!("usage: unpack DEST LAYER...");
        return ExitCode::from(2);
    };
    for (i, layer) in args.enumerate() {
        let dir = dest.join(i.to_string());
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("unpack: create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        let file = match std::fs::File::open(&layer) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("unpack: open {}: {e}", PathBuf::from(&layer).display());
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = vessel_image::unpack::unpack_layer(file, &dir) {
            eprintln!("unpack: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
