//! Analysis of stored mail on the collector (issue 17). The framework
//! (annotation store, queue, worker, dispatcher) comes with the analysis
//! branch; this file holds only the modules it plugs in until then.

pub mod archive;
pub mod ppap;
