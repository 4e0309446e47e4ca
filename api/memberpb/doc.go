// Package memberpb is the Membership API every replica serves (service
// shardkv.member.v1.Membership: List, Change): a group's voters and
// learners and the changes an operator makes to them (add a learner,
// promote, remove, replace through joint consensus), with its wire error
// table (Errors); and the Node service every node serves (Host: host one
// more replica, added to its group as a learner, without a restart;
// Hosting: whether the node hosts a replica of a group; Unhost: stop the
// node's replica of a group and delete it).
package memberpb
