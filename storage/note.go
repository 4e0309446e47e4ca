package storage

// kindNote holds what a process keeps for itself beside its replicas: a
// note by name (see SaveNote), outside every replica's keys.
const kindNote = 'n'

func noteKey(name string) []byte { return append([]byte{kindNote}, name...) }

// SaveNote stores value under name for the process (not for a replica:
// replicas' snapshots and deletions leave it alone), synced. A group
// process keeps the cluster's auth state so, to enforce it from the
// moment it restarts.
func (e *Engine) SaveNote(name string, value []byte) error {
	return e.set(noteKey(name), value, true)
}

// LoadNote returns the value SaveNote stored under name; ok is false when
// there is none.
func (e *Engine) LoadNote(name string) (value []byte, ok bool, err error) {
	return Get(e.db, noteKey(name))
}
