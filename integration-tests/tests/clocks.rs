//! Two clocks, one killed: the survivor takes the lease and windows continue with a valid
//! hash chain, no window number skipped, none opened twice with different randomness, none
//! left unclosed, even when the takeover takes longer than a window.
//! (runtime/tests/resilience.rs does the same with real `grail clock` processes.)

use std::time::Duration;

use actors::role::RoleCtx;
use actors::roles::clock::{Clock, ClockConfig};
use grail_integration_tests::observe::*;
use grail_integration_tests::*;
use messages::Identity;

/// Windows of 1.5 s but a 4 s lease: a takeover always spans more than a window, so the
/// survivor must catch up on what the dead leader left out.
fn slow_lease() -> ClockConfig {
    ClockConfig {
        lease_ttl_ms: 4000,
        ..clock_config(1500)
    }
}

fn start_clock_as(bus: &actors::bus::Bus, identity: &Identity) {
    // Same instance name and key for both clocks: like two `grail clock` processes started
    // from one cluster.toml. Only the lease may decide who leads.
    let ctx = RoleCtx {
        bus: bus.clone(),
        identity: identity.clone(),
        role: "clock",
        instance: "clock-0".into(),
    };
    actors::supervisor::start(
        ctx.clone(),
        std::sync::Arc::new(Clock::new(ctx, slow_lease())),
    );
}

fn leading_window(bus: &actors::bus::Bus) -> i64 {
    bus.metrics.window.with_label_values(&["clock"]).get()
}

#[test]
fn the_survivor_of_two_clocks_takes_over_and_skips_no_window() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let identity = grail_integration_tests::role_identity("clock");
        let id = identity.clone();
        let a = Process::spawn(nats.url(), move |bus| start_clock_as(bus, &id));
        assert!(
            eventually(Duration::from_secs(20), || leading_window(&a.bus) >= 1).await,
            "clock A never led"
        );
        // Clock B: same config, same key; it must stay a follower while A holds the lease.
        start_clock_as(&bus, &identity);
        let book = follow_windows(&bus);
        let started_b = book.latest_open().map(|o| o.window).unwrap_or(1);
        assert!(
            eventually(Duration::from_secs(20), || book
                .latest_closed()
                .is_some_and(|w| w >= started_b + 2))
            .await
        );
        assert_eq!(
            leading_window(&bus),
            0,
            "clock B led while A held the lease"
        );

        a.kill();
        let killed_in = book.latest_open().expect("windows opened").window;
        assert!(
            eventually(Duration::from_secs(30), || leading_window(&bus) > 0
                && book.latest_closed().is_some_and(|w| w >= killed_in + 4))
            .await,
            "B did not take over: leading window {}, latest closed {:?}",
            leading_window(&bus),
            book.latest_closed()
        );
        assert_clock_record_complete(&bus, killed_in + 4).await;
    });
}
