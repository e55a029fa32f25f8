//! kbastion: an SSH bastion for Kubernetes, and the Kubernetes API
//! simulator (`sim`) that its tests and demo run against.
//!
//! The bastion's modules never import `sim`, and `sim` never imports them.

pub mod sim;
