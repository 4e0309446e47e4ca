package group

// ShardState is what a group holds of one shard at its current
// configuration (see the package documentation).
type ShardState uint8

// Shard states.
const (
	Absent ShardState = iota
	Serving
	Pulling
	Offering
	Confirming
)

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
	}
	return "unknown"
}

// servable reports whether clients may read and write the shard.
func (s ShardState) servable() bool { return s == Serving || s == Confirming }
