//! Sessions, subscriptions and retained messages: the broker's shared state, behind one lock
//! that is held only for map operations (never across I/O).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rumqttc::{Publish, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{BrokerMetrics, Limits, topic};

/// Identifies one network connection (a client id may reconnect on a new one).
pub(super) type ConnId = u64;

/// The live connection of a session.
#[derive(Debug)]
struct Live {
    id: ConnId,
    tx: mpsc::Sender<Publish>,
    /// Cancelled when another connection takes over the client id.
    kick: CancellationToken,
}

#[derive(Debug)]
struct Session {
    live: Option<Live>,
    clean: bool,
    subs: HashMap<String, QoS>,
    /// QoS 1 messages held while a persistent session is offline.
    offline: VecDeque<Publish>,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<String, Session>,
    /// Filters without wildcards: topic → client → QoS.
    exact: HashMap<String, HashMap<String, QoS>>,
    /// Filters with wildcards: filter → client → QoS.
    wild: HashMap<String, HashMap<String, QoS>>,
    retained: HashMap<String, Publish>,
}

impl State {
    fn index(&mut self, filter: &str) -> &mut HashMap<String, HashMap<String, QoS>> {
        if topic::is_wildcard(filter) {
            &mut self.wild
        } else {
            &mut self.exact
        }
    }

    fn unindex(&mut self, client: &str, filter: &str) {
        let index = self.index(filter);
        if let Some(clients) = index.get_mut(filter) {
            clients.remove(client);
            if clients.is_empty() {
                index.remove(filter);
            }
        }
    }

    fn drop_session(&mut self, client: &str) {
        if let Some(s) = self.sessions.remove(client) {
            for filter in s.subs.keys() {
                self.unindex(client, filter);
            }
        }
    }
}

/// A connection attached to its session.
#[derive(Debug)]
pub(super) struct Attached {
    pub(super) conn: ConnId,
    pub(super) rx: mpsc::Receiver<Publish>,
    pub(super) kick: CancellationToken,
    pub(super) session_present: bool,
    /// Messages queued while the session was offline, oldest first.
    pub(super) queued: Vec<Publish>,
}

/// A persistent session as saved across restarts: its client id and subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct SavedSession {
    pub(super) client_id: String,
    pub(super) subscriptions: Vec<(String, u8)>,
}

/// The broker's shared state.
#[derive(Debug, Default)]
pub(super) struct Router {
    state: Mutex<State>,
    next_conn: AtomicU64,
    /// A persistent session was created, dropped or changed its subscriptions since the last
    /// save.
    dirty: AtomicBool,
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    match (a, b) {
        (QoS::AtMostOnce, _) | (_, QoS::AtMostOnce) => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    }
}

impl Router {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panicking holder leaves nothing
        // half-done that would matter more than stopping the broker.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attach a new connection for `client`, taking over (kicking) any live one. A clean
    /// session starts empty; a persistent one resumes its subscriptions and offline queue.
    pub(super) fn attach(&self, client: &str, clean: bool, limits: &Limits) -> Attached {
        let conn = self.next_conn.fetch_add(1, Relaxed);
        let (tx, rx) = mpsc::channel(limits.max_queued.max(1));
        let kick = CancellationToken::new();
        let live = Live {
            id: conn,
            tx,
            kick: kick.clone(),
        };
        let mut state = self.lock();
        let mut resumed = None;
        let known = state.sessions.contains_key(client);
        if let Some(old) = state.sessions.get_mut(client) {
            if let Some(previous) = old.live.take() {
                previous.kick.cancel();
            }
            if !clean && !old.clean {
                resumed = Some(old.offline.drain(..).collect::<Vec<_>>());
            }
        }
        let session_present = resumed.is_some();
        if !session_present {
            state.drop_session(client);
        }
        let session = state
            .sessions
            .entry(client.to_owned())
            .or_insert_with(|| Session {
                live: None,
                clean,
                subs: HashMap::new(),
                offline: VecDeque::new(),
            });
        session.live = Some(live);
        if !session_present && (!clean || known) {
            self.dirty.store(true, Relaxed);
        }
        let queued = resumed.unwrap_or_default();
        drop(state);
        Attached {
            conn,
            rx,
            kick,
            session_present,
            queued,
        }
    }

    /// The connection `conn` of `client` ended: a clean session is removed, a persistent one
    /// keeps its subscriptions and queues `undelivered` (sent but unacknowledged, or never
    /// written) for the next connection.
    pub(super) fn detach(
        &self,
        client: &str,
        conn: ConnId,
        undelivered: Vec<Publish>,
        limits: &Limits,
        metrics: &BrokerMetrics,
    ) {
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(client) else {
            return;
        };
        if session.live.as_ref().is_none_or(|l| l.id != conn) {
            // Taken over: the new connection owns the session now.
            return;
        }
        session.live = None;
        if session.clean {
            state.drop_session(client);
            return;
        }
        for p in undelivered.into_iter().rev() {
            if p.qos == QoS::AtMostOnce {
                continue;
            }
            if session.offline.len() >= limits.max_queued {
                metrics.dropped_queue_full.fetch_add(1, Relaxed);
                continue;
            }
            session.offline.push_front(p);
        }
    }

    /// Subscribe `client` to `filter` at `qos` (capped at 1); returns the retained messages
    /// it matches.
    pub(super) fn subscribe(&self, client: &str, filter: &str, qos: QoS) -> Vec<Publish> {
        let qos = min_qos(qos, QoS::AtLeastOnce);
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(client) else {
            return Vec::new();
        };
        if session.subs.insert(filter.to_owned(), qos) != Some(qos) && !session.clean {
            self.dirty.store(true, Relaxed);
        }
        state
            .index(filter)
            .entry(filter.to_owned())
            .or_default()
            .insert(client.to_owned(), qos);
        state
            .retained
            .values()
            .filter(|r| topic::matches(filter, &r.topic))
            .map(|r| {
                let mut p = r.clone();
                p.qos = min_qos(p.qos, qos);
                p
            })
            .collect()
    }

    /// Remove a subscription.
    pub(super) fn unsubscribe(&self, client: &str, filter: &str) {
        let mut state = self.lock();
        if let Some(session) = state.sessions.get_mut(client) {
            if session.subs.remove(filter).is_some() && !session.clean {
                self.dirty.store(true, Relaxed);
            }
        }
        state.unindex(client, filter);
    }

    /// The persistent sessions, if any changed since the last call.
    pub(super) fn take_changes(&self) -> Option<Vec<SavedSession>> {
        if !self.dirty.swap(false, Relaxed) {
            return None;
        }
        let state = self.lock();
        let mut saved: Vec<SavedSession> = state
            .sessions
            .iter()
            .filter(|(_, s)| !s.clean)
            .map(|(id, s)| SavedSession {
                client_id: id.clone(),
                subscriptions: s.subs.iter().map(|(f, q)| (f.clone(), *q as u8)).collect(),
            })
            .collect();
        saved.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Some(saved)
    }

    /// Restore persistent sessions saved by an earlier run (offline until their client
    /// connects, which then finds its session present and its subscriptions in place).
    pub(super) fn restore(&self, saved: Vec<SavedSession>) {
        let mut state = self.lock();
        for s in saved {
            let subs: HashMap<String, QoS> = s
                .subscriptions
                .into_iter()
                .filter(|(f, _)| topic::valid_filter(f))
                .map(|(f, q)| {
                    let qos = if q == 0 {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    (f, qos)
                })
                .collect();
            for (f, q) in &subs {
                state
                    .index(f)
                    .entry(f.clone())
                    .or_default()
                    .insert(s.client_id.clone(), *q);
            }
            state.sessions.insert(
                s.client_id,
                Session {
                    live: None,
                    clean: false,
                    subs,
                    offline: VecDeque::new(),
                },
            );
        }
    }

    /// Deliver `publish` to every matching network subscriber and keep it if retained. A
    /// subscriber whose queue is full loses the message (counted); an offline persistent
    /// session queues QoS 1 messages up to its limit, dropping the oldest.
    pub(super) fn route(&self, publish: &Publish, limits: &Limits, metrics: &BrokerMetrics) {
        let mut state = self.lock();
        if publish.retain {
            if publish.payload.is_empty() {
                state.retained.remove(&publish.topic);
            } else if state.retained.len() >= limits.max_retained
                && !state.retained.contains_key(&publish.topic)
            {
                metrics.dropped_retained_full.fetch_add(1, Relaxed);
            } else {
                let mut kept = publish.clone();
                kept.dup = false;
                kept.pkid = 0;
                state.retained.insert(publish.topic.clone(), kept);
            }
        }
        let mut targets: HashMap<&str, QoS> = HashMap::new();
        if let Some(clients) = state.exact.get(&publish.topic) {
            for (c, q) in clients {
                targets.insert(c, *q);
            }
        }
        for (filter, clients) in &state.wild {
            if topic::matches(filter, &publish.topic) {
                for (c, q) in clients {
                    let e = targets.entry(c).or_insert(*q);
                    if *q == QoS::AtLeastOnce {
                        *e = QoS::AtLeastOnce;
                    }
                }
            }
        }
        if targets.is_empty() {
            return;
        }
        let targets: Vec<(String, QoS)> = targets
            .into_iter()
            .map(|(c, q)| (c.to_owned(), q))
            .collect();
        for (client, qos) in targets {
            let Some(session) = state.sessions.get_mut(&client) else {
                continue;
            };
            let mut out = publish.clone();
            out.retain = false;
            out.dup = false;
            out.pkid = 0;
            out.qos = min_qos(publish.qos, qos);
            let dropped = match &session.live {
                Some(live) => live.tx.try_send(out).is_err(),
                None if out.qos == QoS::AtLeastOnce => {
                    let full = session.offline.len() >= limits.max_queued;
                    if full {
                        session.offline.pop_front();
                    }
                    session.offline.push_back(out);
                    full
                }
                None => false,
            };
            if dropped {
                metrics.dropped_queue_full.fetch_add(1, Relaxed);
            }
        }
    }
}
