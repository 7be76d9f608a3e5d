//! Wall-clock timestamps for statuses, events and logs: the API's one clock.

pub use balsa_api::clock::now;
