package group

// versionCache holds the versions of the keys that writes read and wrote
// since the last command of another kind, by data key. Every write reads
// its key's version; through Pebble that was 15% of a leader's CPU under
// puts (a point read through the memtable and the tables of every level,
// often a block not cached yet since the last compaction). Like the
// session cache it is emptied around every command other than a write
// and on Restore, so it only mirrors what plain writes wrote or read:
// nothing else changes a key's version in between (a version 0 entry is
// a key that does not exist). Bounded: emptied when its keys reach
// maxCachedVersionBytes. Apply holds sm.mu.
type versionCache struct {
	versions map[string]uint64 // by data key
	bytes    int               // of the keys
}

// maxCachedVersionBytes bounds the keys of a replica's version cache (its
// memory is about twice this, with the map's own).
const maxCachedVersionBytes = 1 << 20

// keyVersion returns the version of the key stored at data key k.
func (sm *StateMachine) keyVersion(a *apply, k []byte) (uint64, error) {
	if v, ok := sm.versions.versions[string(k)]; ok {
		return v, nil
	}
	return getVersion(a.b, k)
}

// cacheVersion records that the key stored at data key k is at version
// v after the write being applied.
func (sm *StateMachine) cacheVersion(k []byte, v uint64) {
	vc := &sm.versions
	if vc.versions == nil || vc.bytes+len(k) > maxCachedVersionBytes {
		vc.versions, vc.bytes = map[string]uint64{}, 0
	}
	if _, ok := vc.versions[string(k)]; !ok {
		vc.bytes += len(k)
	}
	vc.versions[string(k)] = v
}

// forgetVersions empties the version cache (see versionCache).
func (sm *StateMachine) forgetVersions() { sm.versions = versionCache{} }
