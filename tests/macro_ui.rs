//! Compile tests of `#[task]`: what it accepts, and the errors it gives for what it refuses.

/// Proves that every supported task signature and attribute compiles against the real facade,
/// and that each unsupported one fails with the checked-in, spanned message in `tests/ui/fail`.
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
