//! The streetgate gateway (see issue: ingest, rules, cases, API).
