package linearizability

import (
	"context"
	"fmt"

	"github.com/shardkv/shardkv/client"
)

// Do runs in with cl and records it as client c's operation: a Get with
// the value and version it read (a failed Get observed nothing and is not
// recorded), a write with its answer (Succeeded, Version, and for a
// conditional write the value after it), or, when it failed, as a write
// whose outcome is unknown. It returns what was observed and the call's
// error.
func (r *Recorder) Do(ctx context.Context, cl *client.Client, c int, in Input) (Output, error) {
	call := r.Now()
	if in.Op == Get {
		got, err := cl.Get(ctx, []byte(in.Key))
		if err != nil {
			return Output{}, err
		}
		out := Output{Value: string(got.Value), Found: got.Found, Versioned: true, Version: got.Version}
		r.Done(c, in, out, call, r.Now())
		return out, nil
	}
	var opts []client.WriteOption
	switch in.Cond {
	case IfVersion:
		opts = append(opts, client.IfVersion(in.IfVersion), client.WithValue())
	case IfValue:
		opts = append(opts, client.IfValue([]byte(in.IfValue)), client.WithValue())
	}
	var res client.WriteResult
	var err error
	switch in.Op {
	case Put:
		res, err = cl.Put(ctx, []byte(in.Key), []byte(in.Value), opts...)
	case Append:
		res, err = cl.Append(ctx, []byte(in.Key), []byte(in.Value), opts...)
	case Delete:
		res, err = cl.Delete(ctx, []byte(in.Key), opts...)
	default:
		return Output{}, fmt.Errorf("linearizability: unknown op %d", in.Op)
	}
	if err != nil {
		r.Unknown(c, in, call) // a failed write may still have happened
		return Output{}, err
	}
	out := Output{Versioned: true, Succeeded: res.Succeeded, Version: res.Version,
		ValueReturned: res.ValueReturned, Value: string(res.Value)}
	r.Done(c, in, out, call, r.Now())
	return out, nil
}

// Seen is what one client last observed of each key (value and version):
// what its conditional writes are built on.
type Seen map[string]Output

// Observe notes what in observed: a Get, or a conditional write (Do asks
// those for the value after them). Other writes do not say the value.
func (s Seen) Observe(in Input, out Output) {
	if in.Op == Get || out.ValueReturned {
		s[in.Key] = out
	}
}

// Conditional returns a conditional write of value to key built on what
// was seen of it: a put if its version is still the one seen (0 for a key
// never seen, or seen absent), or, with alt and a key seen present, an
// append if its value is still the one seen.
func (s Seen) Conditional(key, value string, alt bool) Input {
	seen := s[key]
	if !alt || seen.Version == 0 {
		return Input{Op: Put, Key: key, Value: value, Cond: IfVersion, IfVersion: seen.Version}
	}
	return Input{Op: Append, Key: key, Value: value, Cond: IfValue, IfValue: seen.Value}
}
