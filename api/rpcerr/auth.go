package rpcerr

import "google.golang.org/grpc/codes"

// Auth is the table of the errors of authentication and authorization,
// which every service returns once auth is enabled (the servers'
// interceptor sends them under this table's domain; every service's table
// shares it, so its clients decode them).
var Auth = NewTable("shardkv.auth")

// The refusals of auth. Each is deterministic: a retry with the same
// credentials gets the same error.
var (
	// ErrAuthFailed: no credentials, a wrong user name or password, or a
	// token that is malformed, expired, or revoked (its user was deleted
	// or changed password, or auth was disabled since).
	ErrAuthFailed = Auth.New(codes.Unauthenticated, "AUTH_FAILED", "shardkv: authentication failed")
	// ErrPermissionDenied: the authenticated user lacks the permission
	// the request needs (a key's READ or WRITE, or the admin role).
	ErrPermissionDenied = Auth.New(codes.PermissionDenied, "PERMISSION_DENIED", "shardkv: permission denied")
	// ErrAuthNeedsTLS: auth cannot be enabled, or passwords and tokens
	// sent, over a plaintext connection, or without client-certificate
	// authentication on the cluster.
	ErrAuthNeedsTLS = Auth.New(codes.FailedPrecondition, "AUTH_NEEDS_TLS", "shardkv: auth needs TLS with client certificate authentication")
	// ErrSharedPeerCA: auth cannot be enabled while the controller verifies
	// peers with the clients' CAs (no --peer-trusted-ca of their own): any
	// client certificate carrying the peer URI would be a peer, which auth
	// does not restrict. --allow-shared-peer-ca accepts it (dev --tls).
	ErrSharedPeerCA = Auth.New(codes.FailedPrecondition, "SHARED_PEER_CA", "shardkv: peers and clients share a CA")
	// ErrUserNotFound: the change names a user that does not exist.
	ErrUserNotFound = Auth.New(codes.NotFound, "USER_NOT_FOUND", "shardkv: user not found")
	// ErrUserExists: user add of a name already taken.
	ErrUserExists = Auth.New(codes.AlreadyExists, "USER_EXISTS", "shardkv: user already exists")
	// ErrCertCNTaken: user add naming a certificate common name that
	// another user has already (it would authenticate as either).
	ErrCertCNTaken = Auth.New(codes.AlreadyExists, "CERT_CN_TAKEN", "shardkv: certificate common name already names a user")
	// ErrRoleNotFound: the change names a role that does not exist.
	ErrRoleNotFound = Auth.New(codes.NotFound, "ROLE_NOT_FOUND", "shardkv: role not found")
	// ErrRoleExists: role add of a name already taken (admin included).
	ErrRoleExists = Auth.New(codes.AlreadyExists, "ROLE_EXISTS", "shardkv: role already exists")
	// ErrNoAdmin: auth enable refused because no user has the admin role
	// (it would lock everyone out), or a change that would leave an
	// enabled cluster without one.
	ErrNoAdmin = Auth.New(codes.FailedPrecondition, "NO_ADMIN", "shardkv: no user has the admin role")
	// ErrInvalidAuth: a malformed user or role name, permission, or
	// password.
	ErrInvalidAuth = Auth.New(codes.InvalidArgument, "INVALID_AUTH", "shardkv: invalid auth change")
)
