package raftnode

import (
	"fmt"
	"slices"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/storage"
)

// forceNewCluster rewrites a member's stored raft state so that it is the
// only voter of its group (etcd's --force-new-cluster), for a group that
// lost its quorum for good: the log is cut at the commit index (entries
// this member has but does not know committed are dropped), and
// configuration changes removing every other member (and making this one a
// voter) are appended and marked committed. The member then elects itself;
// replicas are added back with membership changes.
//
// Unsafe by nature: writes the lost members had committed that never
// reached this one are lost, and so are the uncommitted ones it drops.
//
// applied is the state machine's applied index, which a snapshot image
// from a leader may have put above the commit index this member knows:
// the entries up to it are committed (the leader applied them), so the
// log is kept (or, where this member lacks them, filled with empty
// entries) up to it. New entries never reuse an index the state machine
// already reflects: it would skip them, and a write there would be
// acknowledged and never applied.
func forceNewCluster(st storage.RaftState, disk *storage.RaftLog, self, applied uint64) (storage.RaftState, error) {
	hs := st.HardState
	if hs == nil || st.Snapshot == nil {
		return st, fmt.Errorf("force new cluster: the replica has no raft state to start from")
	}
	commit := max(hs.GetCommit(), st.Snapshot.GetIndex(), applied)
	var kept []*raftpb.Entry
	for _, e := range st.Entries {
		if e.GetIndex() <= commit {
			kept = append(kept, e)
		}
	}
	last := st.Snapshot.GetIndex()
	if len(kept) > 0 {
		last = kept[len(kept)-1].GetIndex()
	}
	term := hs.GetTerm()
	var filler []*raftpb.Entry
	for idx := last + 1; idx <= commit; idx++ {
		i := idx
		filler = append(filler, &raftpb.Entry{Type: raftpb.EntryType_EntryNormal.Enum(), Index: &i, Term: &term})
	}
	cs, _, _, err := replayConfChanges(st.Snapshot.GetConfState(), kept, commit)
	if err != nil {
		return st, fmt.Errorf("force new cluster: %w", err)
	}
	var changes []*raftpb.ConfChangeV2
	if len(cs.GetVotersOutgoing()) > 0 {
		changes = append(changes, &raftpb.ConfChangeV2{}) // leave the joint configuration first
	}
	single := func(t raftpb.ConfChangeType, id uint64) *raftpb.ConfChangeV2 {
		return &raftpb.ConfChangeV2{Changes: []*raftpb.ConfChangeSingle{{Type: t.Enum(), NodeId: &id}}}
	}
	if !slices.Contains(cs.GetVoters(), self) {
		changes = append(changes, single(raftpb.ConfChangeType_ConfChangeAddNode, self))
	}
	for _, id := range slices.Concat(cs.GetVoters(), cs.GetLearners(), cs.GetLearnersNext()) {
		if id != self {
			changes = append(changes, single(raftpb.ConfChangeType_ConfChangeRemoveNode, id))
		}
	}
	index := commit
	added := filler
	for _, cc := range changes {
		data, err := proto.Marshal(cc)
		if err != nil {
			return st, err
		}
		index++
		idx := index
		added = append(added, &raftpb.Entry{Type: raftpb.EntryType_EntryConfChangeV2.Enum(), Index: &idx, Term: &term, Data: data})
	}
	newHS := proto.Clone(hs).(*raftpb.HardState)
	newHS.Commit = &index
	// Entries above the commit index are replaced (Append truncates the
	// tail at the last new index; an empty change list still cuts it).
	if err := disk.Append(newHS, added, nil, true); err != nil {
		return st, fmt.Errorf("force new cluster: %w", err)
	}
	if len(added) == 0 && len(kept) < len(st.Entries) {
		if err := disk.TruncateAfter(commit); err != nil {
			return st, fmt.Errorf("force new cluster: %w", err)
		}
	}
	st.HardState, st.Entries = newHS, append(kept, added...) // added starts with the filler
	return st, nil
}
