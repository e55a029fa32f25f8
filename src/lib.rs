//! kbastion: an SSH bastion for Kubernetes, and the Kubernetes API
//! simulator (`sim`) that its tests and demo run against.
//!
//! The bastion's modules (`config`, `login`, `ssh`, `bridge`, `target`,
//! `cluster`) never import `sim`, and `sim` never imports them. The
//! simulator and the demo that runs it are the cargo feature `sim` (on by
//! default); the production image is built without it.

pub mod api_request;
pub mod audit;
pub mod authz;
pub mod bastion;
pub mod bridge;
pub mod certificates;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod debug;
#[cfg(feature = "sim")]
pub mod demo;
pub mod exec;
pub mod file_system;
pub mod forward;
pub mod impersonation;
pub mod keys;
pub mod kube_credential;
pub mod kube_proxy;
pub mod limits;
pub mod log_files;
pub mod login;
pub mod logs;
pub mod metrics;
pub mod node_shell;
pub mod pods;
pub mod proxy_protocol;
pub mod reachable;
pub mod recording;
pub mod registry;
pub mod remote_fs;
pub mod revocation;
pub mod scp;
pub mod server;
pub mod session;
pub mod sftp;
pub mod signing;
#[cfg(feature = "sim")]
pub mod sim;
pub mod spdy;
pub mod ssh;
pub mod sso;
pub mod target;
pub mod tls;
pub mod web;
