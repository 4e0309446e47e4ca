package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/rpc"
)

// firstContact bounds how long a command waits for any controller to
// accept a connection: a wrong --controllers fails in seconds, whatever
// --timeout says.
const firstContact = 2 * time.Second

// clusterFlags are the flags of every command that talks to a cluster.
type clusterFlags struct {
	controllers string
	timeout     time.Duration
	tls         clientTLSFlags
	creds       credentialFlags
	active      *ctlclient.Credentials // the credentials of the command running (nil: none), set by run
	tlsDial     []grpc.DialOption      // the TLS option from tls and the credentials, set by run (none: plaintext)
}

func (c *clusterFlags) register(f *pflag.FlagSet) {
	c.registerTimeout(f, 10*time.Second, "give up after this long")
}

// registerTimeout registers the flags with another --timeout.
func (c *clusterFlags) registerTimeout(f *pflag.FlagSet, timeout time.Duration, usage string) {
	f.StringVar(&c.controllers, "controllers", defaultControllers, "controller addresses, comma separated")
	f.DurationVar(&c.timeout, "timeout", timeout, usage)
	c.tls.register(f)
	c.creds.register(f)
}

// dial are the dial options of connections to the cluster (after run read
// the TLS flags).
func (c *clusterFlags) dial() []grpc.DialOption { return rpc.DialOptions(c.tlsDial...) }

// clientOption makes client.New connect as dial says.
func (c *clusterFlags) clientOption() client.Option { return client.WithDialOptions(c.dial()...) }

// addrs are the controller addresses, checked to be host:port.
func (c *clusterFlags) addrs() ([]string, error) {
	addrs := splitList(c.controllers)
	if len(addrs) == 0 {
		return nil, usagef("--controllers is empty: give the controller replicas' addresses")
	}
	for _, a := range addrs {
		if err := checkHostPort("--controllers", a); err != nil {
			return nil, err
		}
	}
	return addrs, nil
}

// checkHostPort refuses, as a usage error, an address (of what, a flag
// or an argument) that is not host:port (rpc.CheckAddr).
func checkHostPort(what, addr string) error {
	if err := rpc.CheckAddr(addr); err != nil {
		return usagef("%s: %q is not host:port: %v", what, addr, err)
	}
	return nil
}

// run calls fn with a context bounded by --timeout, once a controller
// accepted a connection, and explains its failure: a deadline becomes a
// *timeoutError, a group server's Unimplemented a *notControllerError.
func (c *clusterFlags) run(cmd *cobra.Command, fn func(ctx context.Context, addrs []string) error) error {
	addrs, err := c.addrs()
	if err != nil {
		return err
	}
	if c.tlsDial, err = c.tls.dial(); err != nil {
		return err
	}
	creds, err := c.creds.credentials(cmd, addrs, rpc.DialOptions(c.tlsDial...))
	if err != nil {
		return err
	}
	if c.active = creds; creds != nil {
		defer creds.Close()
		c.tlsDial = append(c.tlsDial, grpc.WithPerRPCCredentials(creds))
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	if err := reach(ctx, addrs); err != nil {
		return err
	}
	err = fn(ctx, addrs)
	switch {
	case err == nil:
		return nil
	case status.Code(err) == codes.Unimplemented:
		return whichServer(cmd.Context(), addrs, c.dial(), err)
	case ctx.Err() == context.DeadlineExceeded && cmd.Context().Err() == nil:
		return &timeoutError{after: c.timeout, err: err}
	}
	return err
}

// unreachableError: no controller accepted a connection within
// firstContact.
type unreachableError struct {
	addrs []string
	after time.Duration
	last  error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach any controller at %s within %v (%s): check --controllers "+
		"(or SHARDKV_CONTROLLERS); shardkv dev prints its controllers' addresses",
		strings.Join(e.addrs, ","), e.after, dialFailure(e.last))
}

func (e *unreachableError) Unwrap() error { return e.last }

// dialFailure says in a few words why a dial failed.
func dialFailure(err error) string {
	var errno syscall.Errno
	var nerr net.Error
	switch {
	case err == nil:
		return "no answer"
	case errors.As(err, &errno):
		return errno.Error()
	case errors.As(err, &nerr) && nerr.Timeout():
		return "no answer"
	}
	return err.Error()
}

// reach waits until one of addrs accepts a TCP connection, for at most
// firstContact (a replica just started may not listen yet: refused
// connections are retried meanwhile).
func reach(ctx context.Context, addrs []string) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, firstContact)
	defer cancel()
	results := make(chan error, len(addrs))
	for _, a := range addrs {
		go func() {
			var d net.Dialer
			for {
				conn, err := d.DialContext(ctx, "tcp", a)
				if err == nil {
					conn.Close()
					results <- nil
					return
				}
				if rpc.Sleep(ctx, 100*time.Millisecond) != nil {
					results <- err
					return
				}
			}
		}()
	}
	var last error
	for range addrs {
		err := <-results
		if err == nil {
			return nil
		}
		last = err
	}
	if parent := context.Cause(ctx); parent != nil && !errors.Is(parent, context.DeadlineExceeded) {
		return parent // interrupted
	}
	return &unreachableError{addrs: addrs, after: time.Since(start).Round(100 * time.Millisecond), last: last}
}

// timeoutError: the cluster did not answer within --timeout.
type timeoutError struct {
	after time.Duration
	err   error
}

func (e *timeoutError) Error() string {
	last := e.err.Error()
	last = strings.TrimPrefix(last, context.DeadlineExceeded.Error())
	last = strings.TrimSpace(last)
	if last == "" {
		return fmt.Sprintf("no answer within --timeout %v", e.after)
	}
	if strings.HasPrefix(last, "(last error: ") && strings.HasSuffix(last, ")") {
		last = "last error: " + strings.TrimSuffix(strings.TrimPrefix(last, "(last error: "), ")")
	}
	return fmt.Sprintf("no answer within --timeout %v: %s", e.after, last)
}

func (e *timeoutError) Unwrap() error { return e.err }

// notControllerError: --controllers names a server that does not serve
// the controller's API (gRPC answers Unimplemented), such as a group's.
type notControllerError struct {
	addr           string // the server, when known
	group, replica uint64 // when it is a group's replica
	err            error
}

func (e *notControllerError) Error() string {
	switch {
	case e.group != 0:
		return fmt.Sprintf("%s is replica %d of group %d, not a controller; --controllers takes the controller replicas' addresses", e.addr, e.replica, e.group)
	case e.addr != "":
		return fmt.Sprintf("%s does not serve the controller API (is it a group server?); --controllers takes the controller replicas' addresses", e.addr)
	}
	return "a server in --controllers does not serve the controller API (is it a group server?); --controllers takes the controller replicas' addresses"
}

func (e *notControllerError) Unwrap() error { return e.err }

// whichServer explains a controller call answered Unimplemented: it asks
// each address whether it is a group's replica.
func whichServer(ctx context.Context, addrs []string, dial []grpc.DialOption, err error) error {
	ctx, cancel := context.WithTimeout(ctx, firstContact)
	defer cancel()
	for _, a := range addrs {
		conn, derr := grpc.NewClient(a, dial...)
		if derr != nil {
			continue
		}
		reply, serr := kvpb.NewKVClient(conn).Status(ctx, &kvpb.StatusRequest{})
		conn.Close()
		if serr == nil {
			return &notControllerError{addr: a, group: reply.GetGroup(), replica: reply.GetReplica(), err: err}
		}
	}
	if len(addrs) == 1 {
		return &notControllerError{addr: addrs[0], err: err}
	}
	return &notControllerError{err: err}
}
