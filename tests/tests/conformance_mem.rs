//! The conformance suite on the in-process `mem://` backend: every semantic of docs/DESIGN.md, one
//! named test each.

distlock_core::conformance_tests!(async { distlock_core::conformance::MemHarness::new() });
