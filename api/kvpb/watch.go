package kvpb

// BeforeVersion reports whether a watch that starts at version
// fromVersion of the key's current life (WatchShard.from_version) skips
// ev: ev made a version below fromVersion. A delete (version 0) ends that
// life, so it, like every change after it, is never before the start. A
// watch skips only until the first change it does not skip: from there on,
// versions restarting after a delete are delivered.
func (ev *WatchEvent) BeforeVersion(fromVersion uint64) bool {
	return ev.GetVersion() != 0 && ev.GetVersion() < fromVersion
}
