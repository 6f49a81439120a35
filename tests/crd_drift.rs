//! The committed CRD manifest must be exactly what `preview-operator crd` prints.

#[test]
fn committed_crd_matches_the_generated_one() {
    let generated = preview_operator::crd::render().expect("the CRD renders");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/previewenvironments.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/previewenvironments.yaml is out of date with src/api.rs; regenerate it with:\n  \
         cargo run --quiet -- crd > crds/previewenvironments.yaml"
    );
}
