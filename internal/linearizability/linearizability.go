// Package linearizability records histories of key/value operations and
// checks them with porcupine, partitioned by key.
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

// Input is what a client asked.
type Input struct {
	Op    Op
	Key   string
	Value string // for Put and Append
}

// Output is what a Get returned.
type Output struct {
	Value string
	Found bool
}

type state struct {
	value  string
	exists bool
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
		st, i := s.(state), in.(Input)
		switch i.Op {
		case Get:
			o := out.(Output)
			return o.Found == st.exists && o.Value == st.value, st
		case Put:
			return true, state{value: i.Value, exists: true}
		case Append:
			return true, state{value: st.value + i.Value, exists: true}
		default:
			return true, state{}
		}
	},
	Equal: func(a, b any) bool { return a.(state) == b.(state) },
	DescribeOperation: func(in, out any) string {
		i := in.(Input)
		switch i.Op {
		case Get:
			o, _ := out.(Output)
			if !o.Found {
				return fmt.Sprintf("get(%q) -> not found", i.Key)
			}
			return fmt.Sprintf("get(%q) -> %q", i.Key, o.Value)
		case Delete:
			return fmt.Sprintf("delete(%q)", i.Key)
		default:
			return fmt.Sprintf("%s(%q, %q)", i.Op, i.Key, i.Value)
		}
	},
	DescribeState: func(s any) string {
		st := s.(state)
		if !st.exists {
			return "<none>"
		}
		return fmt.Sprintf("%q", st.value)
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
