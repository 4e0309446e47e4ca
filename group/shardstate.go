package group

// ShardState is what a group holds of one shard at its current
// configuration (see the package documentation).
type ShardState uint8

// Shard states. Their numbers are stored: only append.
const (
	// Absent: not the group's at this configuration, and no copy of it is
	// kept (kvpb.ErrWrongGroup).
	Absent ShardState = iota
	// Serving: owned at this configuration, data here; served.
	Serving
	// Pulling: owned at this configuration; the data is still at the owner
	// at the previous one (kvpb.ErrNotReady).
	Pulling
	// Offering: lost at this configuration, frozen, and handed over: the
	// new owner may hold some of its data.
	Offering
	// Confirming: owned at this configuration, data here and served; the
	// old owner is not yet told it may delete its copy.
	Confirming
	// Held: lost at this configuration, frozen for the new owner, and no
	// data has left yet. A configuration that gives it back makes it
	// Serving again without a handoff.
	Held
	// Restoring: owned at this configuration, being loaded from a backup
	// (a restore entry started it); not served until the load ends.
	Restoring
)

// String returns the state's name in lower case, such as "serving", or
// "unknown".
func (s ShardState) String() string {
	switch s {
	case Absent:
		return "absent"
	case Serving:
		return "serving"
	case Pulling:
		return "pulling"
	case Offering:
		return "offering"
	case Confirming:
		return "confirming"
	case Held:
		return "held"
	case Restoring:
		return "restoring"
	}
	return "unknown"
}

// servable reports whether clients may read and write the shard.
func (s ShardState) servable() bool { return s == Serving || s == Confirming }
