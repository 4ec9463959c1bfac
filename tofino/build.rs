//! Generates the switch control API's gRPC code from `proto/switch_control.proto` with a
//! vendored protoc, so building needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    println!("cargo:rerun-if-changed=proto/switch_control.proto");
    // Serialize (with ordered maps): reports and `netmigrate migrate switch` print the
    // state as JSON.
    tonic_prost_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .btree_map(".")
        .compile_protos(&["proto/switch_control.proto"], &["proto"])?;
    Ok(())
}
