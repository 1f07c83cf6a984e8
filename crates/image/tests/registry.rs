//! Pull and push against a real `docker-registry` (Debian package `docker-registry`).

mod common;

use std::fs;

use common::{
    assert_two_layer_content, free_port, tmp_leftovers, two_layer_image, Recorder, Registry,
};
use vessel_image::import::{build_config, commit_single, Changes};
use vessel_image::progress::NoProgress;
use vessel_image::registry::{pull, push, RegistryOptions, OCI_INDEX, OCI_MANIFEST};
use vessel_image::{Digest, Error, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn anon() -> RegistryOptions {
    RegistryOptions::default()
}

fn ids(store: &Store) -> Vec<(Digest, Vec<String>)> {
    store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| (i.id, i.tags))
        .collect()
}

#[test]
fn push_then_pull_round_trips_and_reuses_layers() {
    let reg = Registry::start(None);
    let (_d, store) = store();
    let img = two_layer_image(&store, "local/app:1", "round trip\n");
    let dest = reg.reference("vessel/app:v1");
    let rec = Recorder::default();
    let pushed = push(&store, &img, &dest, &anon(), &rec).unwrap();
    assert_eq!(pushed, img.manifest);
    let events = rec.events();
    for l in &img.layers {
        assert!(
            events.contains(&format!("finish {} Pushed", l.blob.short())),
            "{events:?}"
        );
    }
    // Pushing again uploads nothing.
    let rec = Recorder::default();
    push(&store, &img, &dest, &anon(), &rec).unwrap();
    let again = rec.events();
    assert!(
        again
            .iter()
            .filter(|e| e.ends_with("Layer already exists"))
            .count()
            == 2,
        "{again:?}"
    );
    assert!(!again.iter().any(|e| e.starts_with("advance")), "{again:?}");

    store.remove("local/app:1", false).unwrap();
    assert!(store.list().unwrap().is_empty());
    for l in &img.layers {
        assert!(!store.has_blob(&l.blob));
    }

    let rec = Recorder::default();
    let pulled = pull(&store, &dest, &anon(), &rec).unwrap();
    assert_eq!(pulled.id, img.id);
    assert_eq!(
        pulled.manifest, img.manifest,
        "manifest stored byte for byte"
    );
    assert_eq!(pulled.tags, vec![format!("{}/vessel/app:v1", reg.host)]);
    assert_eq!(pulled.layers, img.layers);
    assert_two_layer_content(&store, &pulled, "round trip\n");
    let events = rec.events();
    for l in &img.layers {
        let id = l.blob.short();
        assert!(
            events.contains(&format!("finish {id} Pull complete")),
            "{events:?}"
        );
        let advanced: u64 = events
            .iter()
            .filter_map(|e| e.strip_prefix(&format!("advance {id} ")))
            .map(|n| n.parse::<u64>().unwrap())
            .sum();
        assert_eq!(advanced, l.size, "progress adds up to the layer size");
    }
    assert!(
        events
            .iter()
            .any(|e| e == &format!("message Digest: {}", img.manifest)),
        "{events:?}"
    );

    // A second pull downloads nothing.
    let rec = Recorder::default();
    let second = pull(&store, &dest, &anon(), &rec).unwrap();
    assert_eq!(second.id, img.id);
    let events = rec.events();
    for l in &img.layers {
        assert!(
            events.contains(&format!("finish {} Already exists", l.blob.short())),
            "{events:?}"
        );
    }
    assert!(
        !events.iter().any(|e| e.starts_with("advance")),
        "{events:?}"
    );

    // By digest: same image, no new tag.
    let by_digest: vessel_image::Reference = format!("{}/vessel/app@{}", reg.host, img.manifest)
        .parse()
        .unwrap();
    let pinned = pull(&store, &by_digest, &anon(), &NoProgress).unwrap();
    assert_eq!(pinned.id, img.id);
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn missing_tag_fails_clearly_and_changes_nothing() {
    let reg = Registry::start(None);
    let (d, store) = store();
    let img = two_layer_image(&store, "local/app:1", "x");
    push(
        &store,
        &img,
        &reg.reference("vessel/app:v1"),
        &anon(),
        &NoProgress,
    )
    .unwrap();
    let before = ids(&store);

    let err = pull(
        &store,
        &reg.reference("vessel/app:nope"),
        &anon(),
        &NoProgress,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Registry { .. }), "{err:?}");
    assert!(msg.contains("manifest unknown"), "{msg}");
    assert!(msg.contains(&reg.host), "{msg}");

    let err = pull(
        &store,
        &reg.reference("no/such-repo:1"),
        &anon(),
        &NoProgress,
    )
    .unwrap_err();
    let msg = err.to_string().to_lowercase();
    assert!(
        msg.contains("unknown") || msg.contains("not found"),
        "{msg}"
    );

    assert_eq!(ids(&store), before);
    assert!(tmp_leftovers(d.path()).is_empty());
}

#[test]
fn unreachable_registry_fails_clearly() {
    let (_d, store) = store();
    let port = free_port();
    let r: vessel_image::Reference = format!("127.0.0.1:{port}/app:1").parse().unwrap();
    let err = pull(&store, &r, &anon(), &NoProgress).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Registry { .. }), "{err:?}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.to_lowercase().contains("connect"), "{msg}");
    assert!(store.list().unwrap().is_empty());

    let img = two_layer_image(&store, "local/app:1", "x");
    let err = push(&store, &img, &r, &anon(), &NoProgress).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("connect"), "{err}");
}

#[test]
fn basic_auth_is_required_and_used() {
    let reg = Registry::start(Some(("alice", "s3cret")));
    let (_d, store) = store();
    let img = two_layer_image(&store, "local/app:1", "secret layer\n");
    let dest = reg.reference("private/app:1");
    let creds = RegistryOptions {
        auth: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    };

    let err = push(&store, &img, &dest, &anon(), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("authentication required"), "{err}");
    let wrong = RegistryOptions {
        auth: Some(("alice".into(), "nope".into())),
        ..Default::default()
    };
    let err = push(&store, &img, &dest, &wrong, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");

    push(&store, &img, &dest, &creds, &NoProgress).unwrap();
    store.remove("local/app:1", false).unwrap();

    let err = pull(&store, &dest, &anon(), &NoProgress).unwrap_err();
    assert!(matches!(err, Error::Registry { .. }), "{err:?}");
    assert!(err.to_string().contains("authentication required"), "{err}");
    assert!(store.list().unwrap().is_empty());

    let pulled = pull(&store, &dest, &creds, &NoProgress).unwrap();
    assert_eq!(pulled.id, img.id);
    assert_two_layer_content(&store, &pulled, "secret layer\n");
}

#[test]
fn multi_arch_index_selects_linux_amd64() {
    let reg = Registry::start(None);
    let (_d, store) = store();
    let amd = two_layer_image(&store, "local/multi:amd64", "amd64 flavour\n");
    // The same layers with an arm64 config: a different image.
    let diff_ids: Vec<_> = amd.layers.iter().map(|l| l.diff_id.clone()).collect();
    let mut arm_config = build_config(&diff_ids, &Changes::default(), "arm").unwrap();
    arm_config.set_architecture(oci_spec::image::Arch::ARM64);
    let arm = commit_single(
        &store,
        arm_config,
        amd.layers.clone(),
        Some(&"local/multi:arm64".parse().unwrap()),
    )
    .unwrap();
    assert_ne!(arm.id, amd.id);
    push(
        &store,
        &arm,
        &reg.reference("multi/app:arm64"),
        &anon(),
        &NoProgress,
    )
    .unwrap();
    push(
        &store,
        &amd,
        &reg.reference("multi/app:amd64"),
        &anon(),
        &NoProgress,
    )
    .unwrap();

    let sizes: std::collections::HashMap<Digest, u64> = [&arm, &amd]
        .iter()
        .map(|i| {
            (
                i.manifest.clone(),
                fs::metadata(store.blob_path(&i.manifest)).unwrap().len(),
            )
        })
        .collect();
    let entry = |img: &vessel_image::ImageRecord, arch: &str| {
        serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": img.manifest.to_string(),
            "size": sizes[&img.manifest],
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    // arm64 first, so picking the first entry would be wrong.
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry(&arm, "arm64"), entry(&amd, "amd64")],
    }))
    .unwrap();
    put_manifest(&reg, "multi/app", "multi", &index, OCI_INDEX);

    store.remove("local/multi:amd64", false).unwrap();
    store.remove("local/multi:arm64", false).unwrap();
    let rec = Recorder::default();
    let pulled = pull(&store, &reg.reference("multi/app:multi"), &anon(), &rec).unwrap();
    assert_eq!(pulled.id, amd.id);
    assert_eq!(pulled.manifest, amd.manifest);
    assert_two_layer_content(&store, &pulled, "amd64 flavour\n");
    assert!(
        rec.events()
            .contains(&format!("message Digest: {}", Digest::of(&index))),
        "{:?}",
        rec.events()
    );

    // An index without linux/amd64 is refused, and nothing is stored for it.
    let arm_only = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry(&arm, "arm64")],
    }))
    .unwrap();
    put_manifest(&reg, "multi/app", "armonly", &arm_only, OCI_INDEX);
    let before = ids(&store);
    let err = pull(
        &store,
        &reg.reference("multi/app:armonly"),
        &anon(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, Error::NoMatchingPlatform(_)), "{err:?}");
    assert_eq!(ids(&store), before);
}

#[test]
fn corrupted_registry_blob_is_rejected() {
    let reg = Registry::start(None);
    let (d, store) = store();
    let img = two_layer_image(&store, "local/app:1", "pristine\n");
    let dest = reg.reference("vessel/corrupt:1");
    push(&store, &img, &dest, &anon(), &NoProgress).unwrap();
    store.remove("local/app:1", false).unwrap();

    let data = reg.blob_data(&img.layers[1].blob);
    let mut bytes = fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&data, &bytes).unwrap();

    let err = pull(&store, &dest, &anon(), &NoProgress).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&img.layers[1].blob.to_string()),
        "{err}"
    );
    assert!(store.list().unwrap().is_empty());
    assert!(!store.has_blob(&img.layers[1].blob));
    assert!(!store.has_blob(&img.manifest));
    assert!(
        tmp_leftovers(d.path()).is_empty(),
        "{:?}",
        tmp_leftovers(d.path())
    );
}

#[test]
fn digest_pinned_pull_verifies_the_manifest() {
    let reg = Registry::start(None);
    let (_d, store) = store();
    let img = two_layer_image(&store, "local/app:1", "pinned\n");
    push(
        &store,
        &img,
        &reg.reference("vessel/pin:1"),
        &anon(),
        &NoProgress,
    )
    .unwrap();
    // Digest of something else: the registry has no such manifest.
    let wrong: vessel_image::Reference = format!(
        "{}/vessel/pin@{}",
        reg.host,
        Digest::of(b"not the manifest")
    )
    .parse()
    .unwrap();
    let before = ids(&store);
    assert!(pull(&store, &wrong, &anon(), &NoProgress).is_err());
    assert_eq!(ids(&store), before);
}

#[test]
fn malformed_and_unknown_manifests_are_refused() {
    let reg = Registry::start(None);
    let (_d, store) = store();
    let img = two_layer_image(&store, "local/app:1", "x");
    push(
        &store,
        &img,
        &reg.reference("vessel/odd:1"),
        &anon(),
        &NoProgress,
    )
    .unwrap();
    // A manifest whose layer has a media type vessel cannot unpack.
    let manifest = fs::read_to_string(store.blob_path(&img.manifest)).unwrap();
    let odd = manifest.replace(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.example.weird",
    );
    put_manifest(&reg, "vessel/odd", "weird", odd.as_bytes(), OCI_MANIFEST);
    let before = ids(&store);
    let err = pull(
        &store,
        &reg.reference("vessel/odd:weird"),
        &anon(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownMediaType(t) if t == "application/vnd.example.weird"),
        "{err:?}"
    );
    assert_eq!(ids(&store), before);
}

/// PUTs a manifest with oci-client directly (vessel only pushes images it stores).
fn put_manifest(reg: &Registry, repo: &str, tag: &str, body: &[u8], media_type: &str) {
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let r = oci_client::Reference::with_tag(reg.host.clone(), repo.into(), tag.into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        client
            .auth(
                &r,
                &oci_client::secrets::RegistryAuth::Anonymous,
                oci_client::RegistryOperation::Push,
            )
            .await
            .unwrap();
        client
            .push_manifest_raw(&r, body.to_vec(), media_type.parse().unwrap())
            .await
            .unwrap();
    });
}
