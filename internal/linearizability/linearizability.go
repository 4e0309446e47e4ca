// Package linearizability records histories of key/value operations and
// checks them with porcupine, partitioned by key.
//
// Keys have versions (1 at creation, +1 per put or append, 0 when absent)
// and writes may be conditional (IfVersion, IfValue): a conditional write
// applies only where its condition holds in the sequential order, and a
// known outcome's Succeeded and Version must match that order.
//
// A write whose outcome is unknown (it timed out, or the leader changed under
// it) is recorded with an open end: porcupine may place it anywhere after its
// call, including after every read, which is exactly "maybe applied". A read
// that failed observed nothing and is not recorded.
//
// When a history is not linearizable, Check writes porcupine's interactive
// HTML view of it to a file and names the file in its error.
package linearizability

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Op names an operation kind.
type Op uint8

// Operation kinds.
const (
	Get Op = iota
	Put
	Append
	Delete
)

func (o Op) String() string {
	return [...]string{"get", "put", "append", "delete"}[o]
}

// Cond names a write's condition.
type Cond uint8

// Conditions: none, the key's version equals Input.IfVersion (0: absent),
// the key exists with value Input.IfValue.
const (
	NoCond Cond = iota
	IfVersion
	IfValue
)

// Input is what a client asked.
type Input struct {
	Op        Op
	Key       string
	Value     string // for Put and Append
	Cond      Cond   // for writes
	IfVersion uint64
	IfValue   string
}

// Output is what a Get returned, or what a write answered. Versioned says
// the client observed versions (Version, and a write's Succeeded): without
// it, only a Get's Value and Found are checked (a store without versions),
// and a conditional write's outcome must be known for it to be checked at
// all. A write's Value is checked when ValueReturned (the value after it).
type Output struct {
	Value         string
	Found         bool
	Versioned     bool
	Version       uint64
	Succeeded     bool
	ValueReturned bool
}

type state struct {
	value   string
	exists  bool
	version uint64
}

// step applies a write to st: the state after it and whether its
// condition held.
func step(st state, i Input) (state, bool) {
	switch i.Cond {
	case IfVersion:
		if st.version != i.IfVersion {
			return st, false
		}
	case IfValue:
		if !st.exists || st.value != i.IfValue {
			return st, false
		}
	}
	switch i.Op {
	case Put:
		return state{value: i.Value, exists: true, version: st.version + 1}, true
	case Append:
		return state{value: st.value + i.Value, exists: true, version: st.version + 1}, true
	default:
		return state{}, true
	}
}

// Model is the porcupine model of one key: a string register with append
// and delete, where a missing key reads as not found.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(Input).Key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return state{} },
	Step: func(s, in, out any) (bool, any) {
		st, i, o := s.(state), in.(Input), out.(Output)
		if i.Op == Get {
			return o.Found == st.exists && o.Value == st.value && (!o.Versioned || o.Version == st.version), st
		}
		next, held := step(st, i)
		ok := !o.Versioned || (o.Succeeded == held && o.Version == next.version)
		ok = ok && (!o.ValueReturned || o.Value == next.value)
		return ok, next
	},
	Equal: func(a, b any) bool { return a.(state) == b.(state) },
	DescribeOperation: func(in, out any) string {
		i := in.(Input)
		o, _ := out.(Output)
		var d string
		switch i.Op {
		case Get:
			if !o.Found {
				return fmt.Sprintf("get(%q) -> not found", i.Key)
			}
			d = fmt.Sprintf("get(%q) -> %q", i.Key, o.Value)
			if o.Versioned {
				d += fmt.Sprintf(" v%d", o.Version)
			}
			return d
		case Delete:
			d = fmt.Sprintf("delete(%q)", i.Key)
		default:
			d = fmt.Sprintf("%s(%q, %q)", i.Op, i.Key, i.Value)
		}
		switch i.Cond {
		case IfVersion:
			d += fmt.Sprintf(" if v%d", i.IfVersion)
		case IfValue:
			d += fmt.Sprintf(" if %q", i.IfValue)
		}
		if o.Versioned {
			d += fmt.Sprintf(" -> succeeded %v v%d", o.Succeeded, o.Version)
		}
		return d
	},
	DescribeState: func(s any) string {
		st := s.(state)
		if !st.exists {
			return "<none>"
		}
		return fmt.Sprintf("%q v%d", st.value, st.version)
	},
}

// Recorder collects a history from concurrent clients. The zero value is
// ready to use.
type Recorder struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

// Now returns a monotonic timestamp for an operation's call or return.
func (r *Recorder) Now() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.start.IsZero() {
		r.start = time.Now()
	}
	return int64(time.Since(r.start))
}

// Done records an operation that completed with a known outcome.
func (r *Recorder) Done(client int, in Input, out Output, call, ret int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
}

// Unknown records a write whose outcome is unknown: it may have been
// applied at any time after call.
func (r *Recorder) Unknown(client int, in Input, call int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Output: Output{}, Call: call, Return: math.MaxInt64})
}

// Len is the number of operations recorded.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

// Check verifies the history. On a violation (or a check that could not
// finish within timeout) it writes porcupine's HTML view into dir and
// returns an error naming it.
func (r *Recorder) Check(dir string, timeout time.Duration) error {
	r.mu.Lock()
	ops := append([]porcupine.Operation(nil), r.ops...)
	r.mu.Unlock()
	res, info := porcupine.CheckOperationsVerbose(Model, ops, timeout)
	if res == porcupine.Ok {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("history is %v and its view could not be kept: %w", res, err)
	}
	path := filepath.Join(dir, "history.html")
	if err := porcupine.VisualizePath(Model, info, path); err != nil {
		return fmt.Errorf("history is %v and its view could not be written: %w", res, err)
	}
	// The raw history too, to recheck offline (with a longer timeout, or
	// one key at a time).
	if raw, err := json.Marshal(ops); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "history.json"), raw, 0o644)
	}
	return fmt.Errorf("history of %d operations is %v: see %s", len(ops), res, path)
}
