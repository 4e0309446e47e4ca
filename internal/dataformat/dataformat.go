// Package dataformat holds the version of what replicas write and send one
// another: their log commands, state and raft traffic. A replica refuses to
// start on data of another format (package storage), and a server refuses
// calls from a peer of another format (package internal/rpc), rather than
// apply its group's log under other rules than its fellow members: a log
// replayed or applied under other rules could drop acknowledged writes.
//
// Format 2: write operations numbered from 1 (0 is UNSPECIFIED); log,
// snapshot and handoff messages in internal/grouppb and
// internal/controllerlogpb. Format 3: a key's stored value carries its
// version (package group, value.go). Format 4: group incarnations (a
// group's log has SetIncarnation and its metadata the incarnation; the
// controller's log and configurations record groups' incarnations and
// checked joins): a replica of format 3 would ignore them and diverge
// from the replicas that apply them. Data from before identities recorded
// a format is format 1.
package dataformat

// Version is the data format this build writes and reads.
const Version = 4
