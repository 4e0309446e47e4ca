package memnet

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

type inbox struct {
	mu  sync.Mutex
	got []*raftpb.Message
}

func (b *inbox) Step(_ context.Context, m *raftpb.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got = append(b.got, m)
	return nil
}
func (b *inbox) ReportUnreachable(uint64) {}
func (b *inbox) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.got)
}

func msg(to uint64) []*raftpb.Message {
	return []*raftpb.Message{{Type: raftpb.MessageType_MsgHeartbeat.Enum(), From: new(uint64(1)), To: new(to)}}
}

func TestFaults(t *testing.T) {
	n := New(42)
	a, b, c := &inbox{}, &inbox{}, &inbox{}
	ta, _ := n.Join(1, 1, a)
	if _, err := n.Join(1, 2, b); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Join(1, 2, b); err == nil {
		t.Fatal("joined twice")
	}
	_, _ = n.Join(1, 3, c)

	ta.Send(msg(2))
	if b.count() != 1 {
		t.Fatal("perfect link lost a message")
	}
	n.SetLinkFaults(1, 1, 2, Faults{Duplicate: 1})
	ta.Send(msg(2))
	if b.count() != 3 {
		t.Fatalf("duplicating link delivered %d, want 3 in all", b.count())
	}
	n.SetLinkFaults(1, 1, 2, Faults{Drop: 1})
	ta.Send(msg(2))
	if b.count() != 3 {
		t.Fatal("dropping link delivered")
	}
	n.SetLinkFaults(1, 1, 2, Faults{MinDelay: 50 * time.Millisecond, MaxDelay: 60 * time.Millisecond})
	ta.Send(msg(2))
	if b.count() != 3 {
		t.Fatal("delayed message arrived at once")
	}
	n.Wait()
	if b.count() != 4 {
		t.Fatal("delayed message never arrived")
	}
	n.Partition(1, []uint64{1}, []uint64{3})
	ta.Send(msg(3))
	if c.count() != 0 {
		t.Fatal("message crossed a partition")
	}
	if err := ta.SendSnapshot(context.Background(), msg(3)[0]); err == nil {
		t.Fatal("snapshot crossed a partition")
	}
	n.Heal()
	ta.Send(msg(3))
	if c.count() != 1 {
		t.Fatal("healed link lost a message")
	}
	n.Isolate(1, 3)
	ta.Send(msg(3))
	if c.count() != 1 {
		t.Fatal("message reached an isolated member")
	}
}
