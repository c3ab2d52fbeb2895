//! A 64 KiB shadow stack instead of the linker's 1 MiB: the plugin needs
//! little, and the fewer pages its memory spans, the less the host has to
//! scan and reset after each call.
fn main() {
    println!("cargo:rustc-link-arg-cdylib=-zstack-size=65536");
}
