// Package grouppb is what replica groups say to one another and write down:
// the Handoff service (PullShard, DeleteShard), a group's log commands
// (Command), its persisted metadata (Meta) and snapshot image (Image). Not
// client API: it changes with the storage format.
package grouppb
