//! `load`/`save` round trips, and interoperability with skopeo (Debian package `skopeo`).

mod common;

use std::fs;
use std::process::Command;

use common::{
    assert_two_layer_content, require, tmp_leftovers, two_layer_image, Recorder, Registry,
};
use vessel_image::archive::{load, save, ArchiveFormat};
use vessel_image::import::{build_config, Changes};
use vessel_image::progress::NoProgress;
use vessel_image::registry::{push, RegistryOptions};
use vessel_image::{Digest, Error, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn skopeo(args: &[&str]) {
    let bin = require("skopeo", "skopeo");
    let out = Command::new(bin)
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn save_load_round_trip_both_formats() {
    let (_a, src) = store();
    let img = two_layer_image(&src, "local/app:1", "saved\n");
    src.tag(&img.id, &"local/app:alias".parse().unwrap())
        .unwrap();
    let other = two_layer_image(&src, "other:2", "other\n");
    for format in [ArchiveFormat::Docker, ArchiveFormat::Oci] {
        let mut tar = Vec::new();
        let names = vec![
            "local/app:1".to_string(),
            "local/app:alias".to_string(),
            other.id.to_string(),
        ];
        save(&src, &names, &mut tar, format).unwrap();

        let (d, dst) = store();
        let rec = Recorder::default();
        let mut loaded = load(&dst, &tar[..], &rec).unwrap();
        loaded.sort_by_key(|i| i.tags.len());
        assert_eq!(loaded.len(), 2, "{format:?}");
        let (untagged, tagged) = (&loaded[0], &loaded[1]);
        assert_eq!(
            tagged.id, img.id,
            "{format:?}: image id is the config digest, kept"
        );
        let mut tags = tagged.tags.clone();
        tags.sort();
        assert_eq!(tags, vec!["local/app:1", "local/app:alias"], "{format:?}");
        assert_eq!(untagged.id, other.id);
        assert!(untagged.tags.is_empty(), "saved by id: untagged");
        let diff = |i: &vessel_image::ImageRecord| {
            i.layers
                .iter()
                .map(|l| l.diff_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(diff(tagged), diff(&img));
        if format == ArchiveFormat::Oci {
            assert_eq!(
                tagged.manifest, img.manifest,
                "oci-archive keeps the manifest"
            );
            assert_eq!(tagged.layers, img.layers);
        }
        assert_two_layer_content(&dst, tagged, "saved\n");
        assert_two_layer_content(&dst, untagged, "other\n");
        assert!(
            rec.events().iter().any(|e| e.ends_with("Loaded")),
            "{:?}",
            rec.events()
        );
        assert!(tmp_leftovers(d.path()).is_empty());

        // Loading again changes nothing and downloads nothing new.
        let again = load(&dst, &tar[..], &NoProgress).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(dst.list().unwrap().len(), 2);
    }
}

#[test]
fn skopeo_reads_what_we_save() {
    let (dir, src) = store();
    let img = two_layer_image(&src, "local/app:1", "for skopeo\n");
    for (format, transport) in [
        (ArchiveFormat::Docker, "docker-archive"),
        (ArchiveFormat::Oci, "oci-archive"),
    ] {
        let path = dir.path().join(format!("{transport}.tar"));
        save(
            &src,
            &["local/app:1".to_string()],
            fs::File::create(&path).unwrap(),
            format,
        )
        .unwrap();
        // A full copy reads and verifies every blob.
        let out = dir.path().join(format!("{transport}-copy"));
        skopeo(&[
            "copy",
            &format!("{transport}:{}", path.display()),
            &format!("oci:{}:copied", out.display()),
        ]);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"].as_array().unwrap().len(),
            1,
            "{transport}"
        );
        // And the copy loads back as the same image.
        let tar = dir.path().join(format!("{transport}-copy.tar"));
        skopeo(&[
            "copy",
            &format!("oci:{}:copied", out.display()),
            &format!("oci-archive:{}:again/app:1", tar.display()),
        ]);
        let (_d, dst) = store();
        let loaded = load(&dst, fs::File::open(&tar).unwrap(), &NoProgress).unwrap();
        assert_eq!(loaded[0].id, img.id, "{transport}");
        assert_eq!(loaded[0].tags, vec!["again/app:1"]);
        assert_two_layer_content(&dst, &loaded[0], "for skopeo\n");
    }
}

#[test]
fn loads_skopeo_archives_of_a_pushed_image() {
    let reg = Registry::start(None);
    let (dir, src) = store();
    let img = two_layer_image(&src, "local/app:1", "via registry\n");
    push(
        &src,
        &img,
        &reg.reference("vessel/app:v1"),
        &RegistryOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let from = format!("docker://{}/vessel/app:v1", reg.host);

    let oci = dir.path().join("x.tar");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &from,
        &format!("oci-archive:{}:name:tag", oci.display()),
    ]);
    let docker = dir.path().join("y.tar");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &from,
        &format!("docker-archive:{}:name:tag", docker.display()),
    ]);

    let (_d, dst) = store();
    let loaded = load(&dst, fs::File::open(&oci).unwrap(), &NoProgress).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, img.id);
    assert_eq!(
        loaded[0].manifest, img.manifest,
        "skopeo copies the manifest unchanged"
    );
    assert_eq!(loaded[0].tags, vec!["name:tag"]);
    assert_two_layer_content(&dst, &loaded[0], "via registry\n");

    let (_d2, dst2) = store();
    let loaded = load(&dst2, fs::File::open(&docker).unwrap(), &NoProgress).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, img.id);
    assert_eq!(loaded[0].tags, vec!["name:tag"]);
    assert_two_layer_content(&dst2, &loaded[0], "via registry\n");
}

/// A tar written entry by entry with raw names (the tar crate refuses to write `..`).
fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// An uncompressed layer tar holding one file.
fn layer_tar(path: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, path, content).unwrap();
    b.into_inner().unwrap()
}

fn config_for(diff_ids: &[Digest]) -> Vec<u8> {
    let changes = Changes::parse(&[r#"CMD ["/x"]"#]).unwrap();
    serde_json::to_vec(&build_config(diff_ids, &changes, "test").unwrap()).unwrap()
}

#[test]
fn loads_legacy_docker_layout_with_symlinked_layers() {
    let layer = layer_tar("hello.txt", b"legacy\n");
    let diff = Digest::of(&layer);
    let cfg_a = config_for(std::slice::from_ref(&diff));
    let cfg_a_d = Digest::of(&cfg_a);
    let cfg_b = config_for(&[diff.clone(), diff.clone()]);
    let cfg_b_d = Digest::of(&cfg_b);
    let manifest = serde_json::json!([
        {"Config": format!("{}.json", cfg_a_d.hex()), "RepoTags": ["legacy/a:1"], "Layers": ["aaa/layer.tar"]},
        {"Config": format!("{}.json", cfg_b_d.hex()), "RepoTags": null, "Layers": ["aaa/layer.tar", "bbb/layer.tar"]},
    ]);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let a_name = format!("{}.json", cfg_a_d.hex());
    let b_name = format!("{}.json", cfg_b_d.hex());
    let tar = raw_tar(&[
        ("aaa/", tar::EntryType::Directory, b"", None),
        ("aaa/layer.tar", tar::EntryType::Regular, &layer, None),
        (
            "bbb/layer.tar",
            tar::EntryType::Symlink,
            b"",
            Some("../aaa/layer.tar"),
        ),
        (&a_name, tar::EntryType::Regular, &cfg_a, None),
        (&b_name, tar::EntryType::Regular, &cfg_b, None),
        ("manifest.json", tar::EntryType::Regular, &manifest, None),
    ]);
    let (_d, s) = store();
    let mut loaded = load(&s, &tar[..], &NoProgress).unwrap();
    loaded.sort_by_key(|i| i.layers.len());
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0].id, cfg_a_d);
    assert_eq!(loaded[0].tags, vec!["legacy/a:1"]);
    assert_eq!(loaded[0].layers[0].diff_id, diff);
    assert_eq!(
        loaded[0].layers[0].blob, diff,
        "uncompressed layer: blob digest is the diff id"
    );
    assert_eq!(loaded[1].id, cfg_b_d);
    assert!(loaded[1].tags.is_empty());
    let dir = &s.layer_dirs(&loaded[0]).unwrap()[0];
    assert_eq!(fs::read(dir.join("hello.txt")).unwrap(), b"legacy\n");
}

#[test]
fn rejects_malformed_and_hostile_archives() {
    let (d, s) = store();
    let check_nothing_stored = |what: &str| {
        assert!(s.list().unwrap().is_empty(), "{what}");
        assert!(
            tmp_leftovers(d.path()).is_empty(),
            "{what}: {:?}",
            tmp_leftovers(d.path())
        );
    };

    let bad = raw_tar(&[(
        "manifest.json",
        tar::EntryType::Regular,
        b"[{\"Config\": 42",
        None,
    )]);
    let err = load(&s, &bad[..], &NoProgress).unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("manifest.json"), "{err}");
    check_nothing_stored("malformed manifest.json");

    let err = load(
        &s,
        &raw_tar(&[("random.txt", tar::EntryType::Regular, b"hi", None)])[..],
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("neither manifest.json"), "{err}");

    for name in ["../evil", "blobs/../../evil", "/etc/evil"] {
        let tar = raw_tar(&[(name, tar::EntryType::Regular, b"x", None)]);
        let err = load(&s, &tar[..], &NoProgress).unwrap_err();
        assert!(matches!(err, Error::HostileEntry { .. }), "{name}: {err:?}");
        check_nothing_stored(name);
    }
    assert!(!d.path().join("evil").exists() && !d.path().join("images/evil").exists());
    let tar = raw_tar(&[(
        "a/layer.tar",
        tar::EntryType::Symlink,
        b"",
        Some("../../../etc/passwd"),
    )]);
    let err = load(&s, &tar[..], &NoProgress).unwrap_err();
    assert!(matches!(err, Error::HostileEntry { .. }), "{err:?}");

    // A layer whose content is not what the config says.
    let layer = layer_tar("a", b"real");
    let cfg = config_for(&[Digest::of(&layer_tar("a", b"claimed"))]);
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": "config.json", "RepoTags": ["liar:1"], "Layers": ["l/layer.tar"]}
    ]))
    .unwrap();
    let tar = raw_tar(&[
        ("l/layer.tar", tar::EntryType::Regular, &layer, None),
        ("config.json", tar::EntryType::Regular, &cfg, None),
        ("manifest.json", tar::EntryType::Regular, &manifest, None),
    ]);
    let err = load(&s, &tar[..], &NoProgress).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    check_nothing_stored("lying layer");

    // An OCI layout whose index names a blob the archive lacks.
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": Digest::of(b"gone").to_string(), "size": 4}
    ]}))
    .unwrap();
    let tar = raw_tar(&[
        (
            "oci-layout",
            tar::EntryType::Regular,
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            None,
        ),
        ("index.json", tar::EntryType::Regular, &index, None),
    ]);
    let err = load(&s, &tar[..], &NoProgress).unwrap_err();
    assert!(
        err.to_string().contains("missing from the archive"),
        "{err}"
    );
    check_nothing_stored("missing blob");
}

#[test]
fn save_refuses_unknown_images() {
    let (_d, s) = store();
    let err = save(
        &s,
        &["nope:1".to_string()],
        std::io::sink(),
        ArchiveFormat::Oci,
    )
    .unwrap_err();
    assert!(matches!(err, Error::ImageNotFound(_)), "{err:?}");
}
