// Package auth is the servers' side of authentication and authorization:
// tokens (Sign, Verify), the public auth state a server enforces (View,
// built from the controller's AuthStateReply), the gRPC interceptors that
// enforce it on controller and group servers alike (Guard), and the loop
// by which a group process learns the state from the controller (Follow).
//
// The state itself (users, bcrypt hashes, roles, the signing key) is the
// controller's, replicated with its configurations (package controller).
// Nothing here is linked by the public client: its side is the token
// metadata key (rpc.TokenMetadata) and ctlclient.Credentials.
//
// # Who may call
//
// With auth enabled, a call is allowed when its caller is
//
//   - a peer: a process of this cluster, by its verified peer certificate
//     (rpc.TLS.IsPeer): raft, shard handoff, a group's config and auth
//     long polls; allowed everything but an auth change and a backup's
//     read of the shards (userOnly), which take an admin user;
//   - a user, by a valid token in the metadata "token", or by a verified
//     client certificate whose common name is a user's cert_cn;
//
// and the user's roles grant what the method needs (see rules): READ on
// the key or range of Get, List and Watch, WRITE on the key of a write
// (and READ too when the write returns the value or is conditional), the
// admin role for configuration, membership, backup, auth changes and
// status digests, any user for configuration queries and status. A method
// the rules do not name needs the admin role (default deny). A stream is
// checked again before each message it sends once the view changed or its
// token expired. A group process refuses every call but a peer's as
// Unavailable while its view is unconfirmed (Holder.RequireConfirmation,
// Lease), and a token of a later auth revision than its view.
package auth
