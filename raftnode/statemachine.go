package raftnode

// Entry is one committed log entry as the state machine sees it. Data is nil
// for entries Raft writes for itself (a new leader's empty entry,
// membership changes); they still advance the applied index.
type Entry struct {
	Index uint64
	Term  uint64
	Data  []byte
}

// Commands calls fn with each entry of an Apply call that the state
// machine, at applied index applied, must apply as a command: the entries
// above applied (the others are already reflected) that carry data (the
// others are Raft's own). i is the entry's position in entries, where its
// result goes. Commands returns the index of the last entry above applied
// (applied if none), the state machine's next applied index, or fn's first
// error.
func Commands(entries []Entry, applied uint64, fn func(i int, e Entry) error) (last uint64, err error) {
	last = applied
	for i, e := range entries {
		if e.Index <= applied {
			continue
		}
		last = e.Index
		if e.Data == nil {
			continue
		}
		if err := fn(i, e); err != nil {
			return last, err
		}
	}
	return last, nil
}

// StateMachine is the replicated application behind a Node. Every member
// applies the same entries in the same order and must end in the same state:
// implementations are deterministic and hold no goroutines, clocks or
// network.
//
// Apply and Restore are never called concurrently, and always in log order
// (by the node's apply goroutine, or by its Ready loop for a small batch,
// each under the same lock); Snapshot and Applied may be called
// concurrently with them.
type StateMachine interface {
	// Applied is the index of the last entry reflected in the durable state
	// (0 for a new state machine).
	Applied() uint64
	// Apply applies committed entries in log order, writing their effects
	// and the index of the last one in one atomic batch. Entries at or below
	// Applied are skipped (they are already reflected, for instance after a
	// snapshot newer than the log was restored). results[i] goes back to the
	// proposer of entries[i]. An error is fatal: it stops the node.
	Apply(entries []Entry) (results []any, err error)
	// Snapshot returns a consistent image of the state, including its
	// applied index, for a follower that is too far behind.
	Snapshot() ([]byte, error)
	// Restore replaces the whole state with an image made by Snapshot, in
	// one atomic batch.
	Restore(image []byte) error
}
