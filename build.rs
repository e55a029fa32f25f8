//! Bundles the web terminal's browser code (`src/web/assets/terminal.js`
//! and the xterm.js packages it imports) with esbuild into `OUT_DIR/web`,
//! from which `src/web/assets.rs` embeds it in the binary.
//!
//! The packages come from npm at the versions in the committed
//! `package-lock.json` (`npm ci`); no third-party code is in the
//! repository. Building therefore needs node and npm (Debian: `apt-get
//! install nodejs npm`); without them the build stops with that line.

use std::path::{Path, PathBuf};
use std::process::Command;

const ASSETS: &str = "src/web/assets";
/// Copied next to the installed packages, so that esbuild resolves the
/// imports from there.
const INPUTS: [&str; 3] = ["package.json", "package-lock.json", "terminal.js"];

fn main() {
    for input in INPUTS {
        println!("cargo:rerun-if-changed={ASSETS}/{input}");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let work = out.join("npm");
    let bundle = out.join("web");
    if let Err(error) = build(&work, &bundle) {
        eprintln!("kbastion build: the web terminal's assets: {error}");
        std::process::exit(1);
    }
}

fn build(work: &Path, bundle: &Path) -> Result<(), String> {
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    std::fs::create_dir_all(bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
    for input in INPUTS {
        let from = Path::new(ASSETS).join(input);
        std::fs::copy(&from, work.join(input))
            .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
    }
    // `--ignore-scripts`: no package runs code at install time; esbuild's
    // launcher finds its platform binary without its install script.
    run(
        Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .arg("--loglevel=error")
            .current_dir(work),
        "npm ci (node and npm are needed to build kbastion: apt-get install nodejs npm)",
    )?;
    run(
        Command::new("node")
            .arg(work.join("node_modules/esbuild/bin/esbuild"))
            .arg("terminal.js")
            .args([
                "--bundle",
                "--minify",
                "--format=iife",
                "--target=es2020",
                "--log-level=warning",
            ])
            .arg(format!(
                "--outfile={}",
                bundle.join("terminal.js").display()
            ))
            .current_dir(work),
        "esbuild",
    )
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}
