//! What the real kubectl sees of a pod's life in the simulator, as on a
//! cluster: signals reach container processes as a runtime delivers them.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn ctrl_c_interrupts_sleep_in_kubectl_exec_it_with_the_simulator_started_by_a_script() {
    let scripted = ScriptedSim::start("1.33");
    // The premise: a background job of a non-interactive shell ignores
    // SIGINT (2) and SIGQUIT (3).
    let ignored = scripted.ignored_signals();
    assert_eq!(
        ignored & 0b110,
        0b110,
        "the simulator should inherit SIGINT and SIGQUIT ignored (SigIgn {ignored:x})"
    );
    let sim = &scripted.sim;
    let kubectl = format!(
        "env -u TMUX {} --kubeconfig {} --context admin exec -it solo -- sh -c 'echo sleep-started; sleep 60; echo sleep-ended-$?'; echo kubectl-exit-$?; sleep 60",
        kubectl_path("1.33"),
        sim.kubeconfig.display()
    );
    let tmux = Tmux::start(&kubectl, 100, 30);
    tmux.wait_for_text("sleep-started");
    // Give `sleep` a moment to start after the echo.
    std::thread::sleep(Duration::from_millis(300));
    let interrupted = Instant::now();
    tmux.send(&["C-c"]);
    // SIGINT ends `sleep` and the non-interactive `sh` around it: the
    // command terminates with 128 + 2.
    tmux.wait_for_text("kubectl-exit-130");
    assert!(
        interrupted.elapsed() < Duration::from_secs(15),
        "Ctrl-C took {:?}",
        interrupted.elapsed()
    );
    assert!(!tmux.screen().contains("sleep-ended"), "{}", tmux.screen());
}
