// Package rpc is shardkv's one way for a process to call another: the gRPC
// options every connection and server uses (message limits, keepalive, the
// cluster-id check), one connection per destination (Pool), and backoff
// with jitter between attempts (NewBackoff, Wait), and TLS (TLS: a
// server's credentials and its connections to peers, reloaded as their
// files change; ClientTLS for clients; the peer identity check, PeerURI).
//
// Every caller goes through it: the Go client and the controller client,
// the group servers' drivers and shard pulls, the raft transport, the CLI,
// the benchmark and the nemesis. It imports nothing of the servers, so
// the client links it without linking them.
//
// Real networks drop packets without closing connections: every
// connection made with DialOptions is kept alive (see DeadPeerTimeout),
// and every call is expected to carry a deadline.
package rpc
