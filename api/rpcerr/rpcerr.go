// Package rpcerr carries typed errors across gRPC.
//
// A server maps each sentinel error it may return to a gRPC code and a
// stable reason string, sent as a google.rpc.ErrorInfo detail. The client
// maps the reason back to the same sentinel, so callers on either side of
// the wire branch with errors.Is on the same values.
package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Entry maps one sentinel error to its wire form.
type Entry struct {
	Err    error
	Code   codes.Code
	Reason string
	// Decode, if set, rebuilds the typed error from the metadata its
	// ErrorMetadata method sent (see MetadataError), so that errors.As
	// finds it on the client with its data.
	Decode func(metadata map[string]string) error
}

// MetadataError is implemented by errors that carry data a client acts on
// (the leader's address of a NOT_LEADER, for instance). ToStatus sends it
// as the ErrorInfo detail's metadata; FromStatus hands it to the entry's
// Decode.
type MetadataError interface {
	error
	// ErrorMetadata returns the data to send, as the ErrorInfo's
	// metadata; nil sends none.
	ErrorMetadata() map[string]string
}

// Table is the set of sentinel errors of one domain (a service), each
// declared with its wire form by New.
type Table struct {
	domain  string
	entries []Entry
	shared  []*Table
}

// NewTable returns the table of domain's errors, empty until New declares
// them. It also carries the errors of each shared table (Raft, for
// instance), under domain.
func NewTable(domain string, shared ...*Table) *Table {
	return &Table{domain: domain, shared: shared}
}

// New declares a sentinel error of t: a new error with message msg, which
// travels as code with the stable reason. Call it only to initialize
// package variables: a table is read without locks once the program runs.
func (t *Table) New(code codes.Code, reason, msg string) error {
	return t.add(Entry{Err: errors.New(msg), Code: code, Reason: reason})
}

// add adds e to t and returns its error.
func (t *Table) add(e Entry) error {
	t.entries = append(t.entries, e)
	return e.Err
}

// Entries lists the errors t carries: its own, then those of its shared
// tables.
func (t *Table) Entries() []Entry {
	all := slices.Clone(t.entries)
	for _, s := range t.shared {
		all = append(all, s.Entries()...)
	}
	return all
}

// ToStatus converts err for a gRPC handler's return. A sentinel of the
// table (wrapped or not) keeps its message and gains its reason; context
// errors become DeadlineExceeded or Canceled; anything else is Internal.
func (t *Table) ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, e := range t.Entries() {
		if errors.Is(err, e.Err) {
			info := &errdetails.ErrorInfo{Reason: e.Reason, Domain: t.domain}
			var md MetadataError
			if errors.As(err, &md) {
				info.Metadata = md.ErrorMetadata()
			}
			st, derr := status.New(e.Code, err.Error()).WithDetails(info)
			if derr != nil {
				return status.Error(e.Code, err.Error())
			}
			return st.Err()
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// FromStatus converts an error returned by a gRPC call back into the
// table's sentinel when it carries one of its reasons: the result matches
// errors.Is(result, sentinel) and keeps the server's message. Other errors
// are returned unchanged.
func (t *Table) FromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok {
			continue
		}
		entries := t.Entries()
		if info.GetDomain() != t.domain {
			// A shared table's error sent under its own domain (the auth
			// interceptor's, which serves every service).
			entries = nil
			for _, s := range t.shared {
				if s.domain == info.GetDomain() {
					entries = s.Entries()
				}
			}
		}
		for _, e := range entries {
			if e.Reason == info.GetReason() {
				sentinel := e.Err
				if e.Decode != nil {
					if typed := e.Decode(info.GetMetadata()); typed != nil {
						sentinel = typed
					}
				}
				return &remoteError{sentinel: sentinel, msg: st.Message()}
			}
		}
	}
	return err
}

type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// Retryable reports whether a failed call may be tried on another replica
// or later: the server was unreachable, not the leader, or gave up waiting.
func Retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		return true
	}
	return false
}

// Errorf is a shorthand for a status error with a formatted message.
func Errorf(c codes.Code, format string, args ...any) error {
	return status.Error(c, fmt.Sprintf(format, args...))
}
