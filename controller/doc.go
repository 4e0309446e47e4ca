// Package controller is the shard controller's state machine: the numbered
// configurations that map every shard to the replica group owning it, and
// the rules that produce configuration N+1 from N.
//
// The package is pure. State applies commands deterministically, with no
// goroutines, clocks or network: the leader stamps each command with its
// clock before proposing it, and that stamp is the only time the state ever
// sees. Store persists a State in Pebble and plugs it into a raft node;
// package ctlserver serves it over gRPC and ctlclient talks to it.
//
// # Configurations
//
// Configuration 0 has every shard on group 0 ("no group") and no groups. The
// number of shards is fixed by the first Init command and never changes.
// Every Join, Leave or Move that changes something appends configuration
// N+1; history is never rewritten, so Query(n) always returns the same
// answer for the same n.
//
// # Rebalancing
//
// Join and Leave rebalance with Rebalance, whose rules are documented on it:
// even (max − min ≤ 1), minimal (only shards that must move do), and
// deterministic (ids are sorted and ties broken explicitly, never by map
// order). Move assigns exactly one shard and does not rebalance, so an
// operator's placement survives until the next Join or Leave.
//
// # Exactly once
//
// Each change carries a session (client id, sequence number). The state
// remembers, per client, the last sequence number applied and its outcome,
// including a deterministic refusal, and answers a retry with that outcome
// instead of applying it again. A client opens its session first
// (OpenSession, idempotent); a change in a session the state does not know
// (never opened, or forgotten) is refused with
// rpcerr.ErrSessionExpired and never applied, since it may retry a
// change applied before the session was forgotten (Raft dissertation,
// section 6.3). Sessions idle for longer than SessionTTL of replicated time
// (see package session) are forgotten.
//
// # Auth
//
// The state also holds who may do what (auth.go): users with their bcrypt
// hashes (never passwords: the leader hashes before proposing), roles of
// key-prefix permissions, the built-in AdminRole, whether auth is enabled,
// a revision raised by every auth change, and the token-signing key the
// leader generated for the enable. Auth changes are commands like the
// others, in the client's session. Servers enforce the public part of it
// (AuthView; package internal/auth).
package controller
