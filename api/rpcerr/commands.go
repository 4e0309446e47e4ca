package rpcerr

import "google.golang.org/grpc/codes"

// Commands is the table of the errors of a command to a state machine that
// keeps client sessions for exactly-once commands (the KV service's groups
// and the controller): the refusals of its session, and of a command that
// cannot be decoded. Each such service's table shares it, as it shares
// Raft, and sends them under the service's own domain.
var Commands = NewTable("shardkv.command")

// The refusals of a command by a session's state machine. Each is
// deterministic and applies nothing: a retry of the same request gets the
// same error.
var (
	// ErrStaleRequest: the session already applied a later request.
	ErrStaleRequest = Commands.New(codes.FailedPrecondition, "STALE_REQUEST", "shardkv: request older than its session's last applied one")
	// ErrSessionExpired: the request's session is unknown to the state
	// machine (expired, or never opened), so the request may be a retry of
	// one applied before the session expired. Nothing was applied by this
	// request; an earlier attempt of it may have been. Open a new session.
	ErrSessionExpired = Commands.New(codes.FailedPrecondition, "SESSION_EXPIRED", "shardkv: session expired")
	// ErrMalformed: the request or command could not be decoded or is
	// inconsistent (an unknown op, a change that names nothing). Nothing
	// was applied.
	ErrMalformed = Commands.New(codes.InvalidArgument, "MALFORMED", "shardkv: malformed request")
)
