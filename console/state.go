package console

import "time"

// State is the document /api/console/state serves (JSON).
type State struct {
	Time      time.Time `json:"time"`
	ConfigNum uint64    `json:"config_num"`
	Error     string    `json:"error,omitempty"` // why the controller could not be read, if it could not
	Shards    []Shard   `json:"shards"`
	Groups    []Group   `json:"groups"`
	History   []Change  `json:"history"` // newest first
}

// Shard is one cell of the shard map.
type Shard struct {
	Shard      int    `json:"shard"`
	Group      uint64 `json:"group"` // owner in the latest configuration; 0: none
	State      string `json:"state"` // at the owner's leader; "waiting" until it holds the shard
	Peer       uint64 `json:"peer,omitempty"`
	MovedBytes uint64 `json:"moved_bytes,omitempty"` // pulled so far, while pulling
}

// Group is one replica group.
type Group struct {
	ID       uint64    `json:"id"`
	Shards   int       `json:"shards"` // shards it owns in the latest configuration
	Replicas []Replica `json:"replicas"`
	// OpsPerSec and P99Ms are over the last poll interval; Traffic is the
	// last five minutes of them, oldest first.
	OpsPerSec float64  `json:"ops_per_sec"`
	P99Ms     float64  `json:"p99_ms"`
	Traffic   []Sample `json:"traffic"`
}

// Replica is one replica of a group, as its Status answered.
type Replica struct {
	Addr      string `json:"addr"`
	ID        uint64 `json:"id,omitempty"`
	Role      string `json:"role"` // leader, follower, or unreachable
	Term      uint64 `json:"term,omitempty"`
	Commit    uint64 `json:"commit,omitempty"`
	Applied   uint64 `json:"applied,omitempty"`
	Lag       uint64 `json:"lag"` // entries behind the leader's commit index
	ConfigNum uint64 `json:"config_num,omitempty"`
	DataBytes uint64 `json:"data_bytes,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Sample is one poll's traffic of a group.
type Sample struct {
	Time      time.Time `json:"t"`
	OpsPerSec float64   `json:"ops"`
	P99Ms     float64   `json:"p99_ms"`
}

// Change is one configuration in the history.
type Change struct {
	Num     uint64     `json:"num"`
	What    string     `json:"what"`
	Seen    *time.Time `json:"seen,omitempty"`    // when this console first saw it
	Settled *time.Time `json:"settled,omitempty"` // when every shard it assigns was served by its owner
	TookMs  float64    `json:"took_ms,omitempty"` // Settled - Seen
}
