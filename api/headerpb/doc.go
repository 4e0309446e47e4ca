// Package headerpb is the ResponseHeader every shardkv reply carries, as
// etcd's: the cluster, group and replica that answered, its raft term,
// applied index and configuration number.
package headerpb
