//! Fuzzes the request validator: any bytes must yield a report, never a panic, and the same report
//! twice.
#![no_main]

use draven_registry::validate::{validate, Kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let report = validate(Kind::Request, data);
    assert_eq!(report, validate(Kind::Request, data), "validation is deterministic");
});
