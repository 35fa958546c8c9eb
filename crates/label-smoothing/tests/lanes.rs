//! The kernel for few classes (rows across the SIMD lanes, `K <= 12` with hard labels) gives the row kernel's
//! bits: every configuration the lanes take, with the rows they leave to the row kernel mixed in (ignored
//! labels, all `-inf`, NaN and `+inf` logits), in all three dtypes and call forms, on 1 and 3 threads. The row
//! kernel is the reference: it is the one the golden, finite-difference and f64-reference tests check, at every
//! K, and it gives the same bits for any K. An integration test (not a unit test) so that it runs the kernels
//! the core crate compiled, instead of compiling them once more.
//!
//! The hooks exist only with the core crate's `test-hooks` feature, which the workspace's tests enable (through a
//! dev-dependency of the crate on itself). Built from the published package, without it, the test is reported as
//! ignored, with the command that runs it.

#[cfg(feature = "test-hooks")]
#[path = "lanes/kernels.rs"]
mod kernels;

#[cfg(not(feature = "test-hooks"))]
#[test]
#[ignore = "needs the `test-hooks` feature: cargo test --features test-hooks --test lanes"]
fn lanes_need_the_test_hooks_feature() {}
