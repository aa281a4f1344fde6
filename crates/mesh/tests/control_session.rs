//! The control session against control's own registration rules
//! (`causeway_tailnet::TailnetState`), with a fault at every step: a request
//! lost before control, an answer lost after control applied it, control
//! failing, the node crashing (the machine rebuilt from what is on disk,
//! at each point between two writes), and the node key expiring. After
//! every step control holds the node's current or pending key; once the
//! faults stop, the node runs on the key control holds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use causeway_mesh::{ControlSessionState, NodeKeys, SessionCommand, SessionFailure};
use causeway_tailnet::addresses::ula_from_random;
use causeway_tailnet::auth_keys::{ID_BYTES, SECRET_BYTES};
use causeway_tailnet::{AuthKeySpec, TailnetInfo, TailnetState};
use causeway_wire::{ErrorCode, MapRequest, PublicKey, RegisterRequest, UnixTime};
use proptest::prelude::*;

const LIFETIME: i64 = 86_400;
const T0: UnixTime = 1_700_000_000;

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// The request never reaches control.
    LoseRequest,
    /// Control applies the request; its answer is lost.
    LoseAnswer,
    /// Control answers `internal` (storage failed, restarting).
    ControlFails,
    /// The node crashes after the step's first write (or after control
    /// applied its request).
    Crash,
    /// An admin expires the node key first.
    Expire,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        3 => Just(Fault::None),
        1 => Just(Fault::LoseRequest),
        1 => Just(Fault::LoseAnswer),
        1 => Just(Fault::ControlFails),
        1 => Just(Fault::Crash),
        1 => Just(Fault::Expire),
    ]
}

/// What the node keeps on disk.
#[derive(Clone, Copy, Debug)]
struct Disk {
    current: PublicKey,
    pending: Option<PublicKey>,
    registered: bool,
}

struct World {
    control: TailnetState,
    auth_key: String,
    machine_key: PublicKey,
    disk: Disk,
    machine: ControlSessionState,
    /// The map stream is open.
    running: bool,
    clock: Instant,
    next_key: u8,
    crashes: u64,
    stopped: Option<String>,
}

impl World {
    fn new(reusable: bool) -> Self {
        let mut control = TailnetState::new(TailnetInfo::new("sim", ula_from_random([1; 5])));
        let spec = AuthKeySpec {
            reusable,
            ..AuthKeySpec::default()
        };
        let auth_key = control
            .create_auth_key(&spec, [1; ID_BYTES], [2; SECRET_BYTES], T0)
            .expect("valid spec")
            .0
            .secret;
        let disk = Disk {
            current: key(10),
            pending: None,
            registered: false,
        };
        Self {
            control,
            auth_key,
            machine_key: key(1),
            disk,
            machine: machine(&disk),
            running: false,
            clock: Instant::now(),
            next_key: 11,
            crashes: 0,
            stopped: None,
        }
    }

    fn crash(&mut self) {
        self.crashes += 1;
        self.running = false;
        self.machine = machine(&self.disk);
    }

    fn expire(&mut self) {
        if let Some(id) = self
            .control
            .node_by_machine(&self.machine_key)
            .map(|n| n.id)
        {
            self.control.expire_node(id, T0).expect("node exists");
            if self.running {
                self.running = false;
                self.machine.handle_failure(
                    self.clock,
                    SessionFailure::Refused {
                        code: ErrorCode::NodeKeyExpired,
                        message: "node key expired".into(),
                    },
                );
            }
        }
    }

    fn step(&mut self, fault: Fault) {
        if let Fault::Expire = fault {
            self.expire();
        }
        if let Some(command) = self.machine.poll_command() {
            return self.execute(command, fault);
        }
        if self.running {
            match fault {
                Fault::None | Fault::Expire => {}
                Fault::Crash => self.crash(),
                Fault::LoseRequest | Fault::LoseAnswer | Fault::ControlFails => {
                    self.running = false;
                    self.machine.handle_failure(
                        self.clock,
                        SessionFailure::Unreachable("stream broke".into()),
                    );
                }
            }
            return;
        }
        if let Some(due) = self.machine.poll_timeout() {
            assert!(due > self.clock, "a retry scheduled in the past");
            assert!(due - self.clock <= Duration::from_secs(5), "retry too late");
            self.clock = due;
            self.machine.handle_timeout(self.clock);
        }
    }

    fn execute(&mut self, command: SessionCommand, fault: Fault) {
        match command {
            SessionCommand::CreatePendingKey => {
                let new = key(self.next_key);
                self.next_key += 1;
                self.disk.pending = Some(new);
                if let Fault::Crash = fault {
                    return self.crash();
                }
                self.machine.handle_pending_key(new);
            }
            SessionCommand::CommitKey { key } => {
                self.disk.current = key;
                if let Fault::Crash = fault {
                    // Crash between the two writes: the pending file stays.
                    return self.crash();
                }
                self.disk.pending = None;
            }
            SessionCommand::Register(attempt) => {
                let request = RegisterRequest {
                    node_key: attempt.node_key,
                    old_node_key: attempt.old_node_key,
                    auth_key: attempt.with_auth_key.then(|| self.auth_key.clone()),
                    hostname: "sim".into(),
                };
                let failure = match fault {
                    Fault::LoseRequest => Some(SessionFailure::Unreachable("lost".into())),
                    Fault::ControlFails => Some(SessionFailure::Refused {
                        code: ErrorCode::Internal,
                        message: "try again".into(),
                    }),
                    Fault::None | Fault::LoseAnswer | Fault::Crash | Fault::Expire => None,
                };
                if let Some(failure) = failure {
                    return self.machine.handle_failure(self.clock, failure);
                }
                let answer = self
                    .control
                    .register(self.machine_key, &request, LIFETIME, T0);
                match fault {
                    Fault::LoseAnswer => {
                        return self.machine.handle_failure(
                            self.clock,
                            SessionFailure::Unreachable("lost".into()),
                        );
                    }
                    Fault::Crash => return self.crash(),
                    Fault::None | Fault::Expire | Fault::LoseRequest | Fault::ControlFails => {}
                }
                match answer {
                    Ok(_) => {
                        self.disk.registered = true;
                        self.machine.handle_registered(attempt.node_key);
                    }
                    Err(e) => self.machine.handle_failure(
                        self.clock,
                        SessionFailure::Refused {
                            code: e.code(),
                            message: e.to_string(),
                        },
                    ),
                }
            }
            SessionCommand::OpenMap { node_key } => {
                assert_eq!(node_key, self.disk.current, "the map uses the key on disk");
                let failure = match fault {
                    Fault::LoseRequest | Fault::LoseAnswer => {
                        Some(SessionFailure::Unreachable("lost".into()))
                    }
                    Fault::ControlFails => Some(SessionFailure::Refused {
                        code: ErrorCode::Internal,
                        message: "try again".into(),
                    }),
                    Fault::None | Fault::Crash | Fault::Expire => None,
                };
                if let Some(failure) = failure {
                    return self.machine.handle_failure(self.clock, failure);
                }
                let request = MapRequest {
                    node_key,
                    hostname: "sim".into(),
                    endpoints: vec![SocketAddr::from(([198, 18, 0, 9], 41641))],
                    advertised_routes: vec![],
                    health: None,
                    priority: None,
                    app_connector: None,
                };
                match self.control.connect(self.machine_key, &request, T0) {
                    Ok(_) => {
                        if let Fault::Crash = fault {
                            return self.crash();
                        }
                        self.running = true;
                        self.machine.handle_map_opened();
                    }
                    Err(e) => self.machine.handle_failure(
                        self.clock,
                        SessionFailure::Refused {
                            code: e.code(),
                            message: e.to_string(),
                        },
                    ),
                }
            }
            SessionCommand::Stop { message } => self.stopped = Some(message),
        }
    }

    /// Control holds the node's current or pending key.
    fn check(&self) {
        let Some(record) = self.control.node_by_machine(&self.machine_key) else {
            return;
        };
        assert!(
            record.node_key == self.disk.current || Some(record.node_key) == self.disk.pending,
            "control holds {:?}, the node has {:?}",
            record.node_key,
            self.disk
        );
    }
}

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

fn machine(disk: &Disk) -> ControlSessionState {
    ControlSessionState::new(
        NodeKeys {
            current: disk.current,
            pending: disk.pending,
        },
        disk.registered,
        3,
    )
}

fn run(faults: &[Fault], reusable: bool) -> World {
    let mut world = World::new(reusable);
    for &fault in faults {
        world.step(fault);
        world.check();
        assert_eq!(world.stopped, None, "stopped during {faults:?}");
    }
    settle(&mut world);
    world
}

/// Steps without faults until the map stream is open on a committed key.
fn settle(world: &mut World) {
    for _ in 0..50 {
        if world.running && world.disk.pending.is_none() {
            break;
        }
        world.step(Fault::None);
        world.check();
        assert_eq!(world.stopped, None);
    }
}

fn assert_settled(world: &World) {
    assert!(world.running, "the map stream is not open");
    assert_eq!(world.disk.pending, None);
    let record = world
        .control
        .node_by_machine(&world.machine_key)
        .expect("registered");
    assert_eq!(record.node_key, world.disk.current);
    assert!(!record.is_expired(T0));
}

proptest! {
    #[test]
    fn every_fault_sequence_ends_running_on_a_key_control_holds(
        faults in prop::collection::vec(fault(), 0..40),
        reusable in any::<bool>(),
    ) {
        let world = run(&faults, reusable);
        assert_settled(&world);
    }
}

#[test]
fn an_expiry_during_a_failing_rotation_keeps_the_old_key_until_control_answers() {
    use Fault::*;
    // Join, open the map, expire, then lose the rotation request three times.
    let mut world = World::new(false);
    for fault in [
        None,
        None,
        Expire,
        LoseRequest,
        None,
        ControlFails,
        None,
        LoseAnswer,
    ] {
        world.step(fault);
        world.check();
        assert_eq!(world.disk.current, key(10), "the old key is still current");
    }
    assert_eq!(world.disk.pending, Some(key(11)));
    assert!(!world.running);
    settle(&mut world);
    assert_settled(&world);
    assert_eq!(world.disk.current, key(11));
}

#[test]
fn a_crash_after_control_accepted_the_new_key_recovers_it() {
    use Fault::*;
    let mut world = World::new(false);
    // Join, map, expire (and create the key), register (control applies
    // it) and crash.
    for fault in [None, None, Expire, Crash] {
        world.step(fault);
        world.check();
    }
    assert_eq!(world.crashes, 1);
    assert_eq!(
        world
            .control
            .node_by_machine(&world.machine_key)
            .expect("registered")
            .node_key,
        key(11),
        "control holds the new key"
    );
    assert_eq!(world.disk.current, key(10), "the node did not store it");
    // The pending key expires too before the node is back.
    world.expire();
    settle(&mut world);
    assert_settled(&world);
    assert_eq!(
        world.disk.current,
        key(12),
        "rotated on from the expired new key"
    );
}

#[test]
fn a_join_whose_answer_was_lost_survives_a_single_use_key() {
    use Fault::*;
    let world = run(&[LoseAnswer], false);
    assert_settled(&world);
}
