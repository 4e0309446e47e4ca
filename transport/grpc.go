package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/transportpb"
	"github.com/shardkv/shardkv/internal/rpc"
)

const (
	// snapshotChunkSize bounds one gRPC message of a snapshot stream.
	snapshotChunkSize = 1 << 20
	// maxBatchBytes bounds one batch of ordinary messages, well below
	// rpc.MaxMessageBytes.
	maxBatchBytes = 4 << 20
	// queueLen bounds the messages waiting for one peer; beyond it they are
	// dropped and reported unreachable, as a congested network would.
	queueLen = 4096
	// coalesceWindow is how long a plain heartbeat (or its response) may
	// wait for company on its way to a peer process: every group hosted
	// on both processes heartbeats on its own phase, and sent one by one
	// a hundred idle groups cost a thousand writes and wakeups a second.
	// Held up to this long they go in a few batches per heartbeat period
	// (CockroachDB coalesces heartbeats per node pair for the same
	// reason). It is a fifth of raftnode's heartbeat period, far below an
	// election timeout; heartbeats that carry a ReadIndex context, and
	// every other message, are sent at once.
	coalesceWindow = 10 * time.Millisecond
)

// ErrUnknownPeer is returned when no address is known for a member.
var ErrUnknownPeer = errors.New("transport: no address for member")

// ErrOtherCopy refuses a snapshot that another copy of the receiver's
// group sent (another founding token; see Founded).
var ErrOtherCopy = errors.New("transport: sent by another copy of the group (another founding token)")

type member struct{ group, id uint64 }

// Server receives raft messages for every replica of this process. Register
// it on the process's gRPC server.
type Server struct {
	transportpb.UnimplementedRaftServer
	mu       sync.RWMutex
	handlers map[member]Handler

	batches, messages atomic.Uint64 // received (Received)
	otherCopy         atomic.Uint64 // dropped: sent by another copy of the group (OtherCopy)

	log        atomic.Pointer[slog.Logger] // SetLogger
	warnedMu   sync.Mutex
	warnedCopy map[member]time.Time // when another copy's messages to a member were last logged

	// When a peer process last named each of its replicas quiesced.
	quiescedMu sync.Mutex
	quiesced   map[quiescedName]time.Time
	swept      time.Time // when names not heard for a minute were last dropped
}

// OtherCopy returns how many raft messages the Server dropped because
// another copy of their group sent them (another founding token).
func (s *Server) OtherCopy() uint64 { return s.otherCopy.Load() }

// SetLogger makes the Server log what an operator must act on: another
// copy's raft messages reaching a replica here (at most once a minute per
// replica). Without it nothing is logged.
func (s *Server) SetLogger(l *slog.Logger) { s.log.Store(l) }

// checkCopy refuses (ErrOtherCopy) a snapshot for member to of group,
// stamped with token, that handler h must not take (sameCopy).
func (s *Server) checkCopy(group, to, token uint64, h Handler) error {
	if sameCopy(token, h) {
		return nil
	}
	s.droppedOtherCopy(group, to, token)
	return fmt.Errorf("group %d member %d: %w", group, to, ErrOtherCopy)
}

// droppedOtherCopy counts a message that another copy of group sent to
// member to, and says so: that copy (a group that left, say) still lists
// this process for the member, and keeps running until its nodes drop it.
func (s *Server) droppedOtherCopy(group, to, token uint64) {
	s.otherCopy.Add(1)
	l := s.log.Load()
	if l == nil {
		return
	}
	now, m := time.Now(), member{group, to}
	s.warnedMu.Lock()
	last, ok := s.warnedCopy[m]
	if ok && now.Sub(last) < time.Minute {
		s.warnedMu.Unlock()
		return
	}
	s.warnedCopy[m] = now
	s.warnedMu.Unlock()
	l.Warn("dropped raft messages from another copy of a group: a copy founded otherwise (a group that left, say) still lists this node "+
		"for the replica. Check which copy the configuration has (admin config and admin status -o json show incarnations) "+
		"before dropping the other copy's replicas (admin member unhost) on its nodes",
		"group", group, "replica", to, "their_founding_token", fmt.Sprintf("%016x", token))
}

// Received returns how many batches, and messages in them, the Server has
// received from peer processes.
func (s *Server) Received() (batches, messages uint64) {
	return s.batches.Load(), s.messages.Load()
}

// NewServer returns a Server with no replicas.
func NewServer() *Server {
	return &Server{handlers: make(map[member]Handler), quiesced: make(map[quiescedName]time.Time), warnedCopy: map[member]time.Time{}}
}

// quiescedName is a replica a peer process names quiesced, with the
// founding token of its copy: two copies' members of one id are two
// names (each copy's presence is its own).
type quiescedName struct {
	member
	token uint64
}

// sameCopy reports whether a message stamped with token may reach h: a
// replica drops what another copy of its group sends (see
// storage.FoundingTokenFor); 0 on either side is no token known, which
// every copy accepts.
func sameCopy(token uint64, h Handler) bool {
	mine := foundingToken(h)
	return token == 0 || mine == 0 || token == mine
}

// heardQuiesced records a peer process's list of its quiesced replicas.
func (s *Server) heardQuiesced(ms []*transportpb.Member) {
	now := time.Now()
	s.quiescedMu.Lock()
	defer s.quiescedMu.Unlock()
	for _, m := range ms {
		s.quiesced[quiescedName{member{m.GetGroup(), m.GetId()}, m.GetFoundingToken()}] = now
	}
	// Forget members not named for a minute (groups that left, replicas
	// awake), so the map stays as large as what is quiesced.
	if now.Sub(s.swept) > time.Minute {
		s.swept = now
		for m, at := range s.quiesced {
			if now.Sub(at) > time.Minute {
				delete(s.quiesced, m)
			}
		}
	}
}

// QuiescedAt returns when a peer process last named member id of group
// quiesced (the zero time: never, or not for a minute), as a member of the
// copy of the group whose founding token is token, or as one stating no
// token; token 0 takes any copy's name.
func (s *Server) QuiescedAt(group, id, token uint64) time.Time {
	s.quiescedMu.Lock()
	defer s.quiescedMu.Unlock()
	m := member{group, id}
	if token != 0 {
		mine, unstated := s.quiesced[quiescedName{m, token}], s.quiesced[quiescedName{m, 0}]
		if unstated.After(mine) {
			return unstated
		}
		return mine
	}
	var last time.Time
	for q, at := range s.quiesced {
		if q.member == m && at.After(last) {
			last = at
		}
	}
	return last
}

// Register adds the Raft service to g.
func (s *Server) Register(g *grpc.Server) { transportpb.RegisterRaftServer(g, s) }

func (s *Server) handler(group, id uint64) Handler {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.handlers[member{group, id}]
}

// Stream implements transportpb.RaftServer.
func (s *Server) Stream(stream grpc.ClientStreamingServer[transportpb.Batch, transportpb.Ack]) error {
	ctx := stream.Context()
	for {
		b, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&transportpb.Ack{})
		}
		if err != nil {
			return err
		}
		s.batches.Add(1)
		s.messages.Add(uint64(len(b.GetEnvelopes())))
		if q := b.GetQuiesced(); len(q) > 0 {
			s.heardQuiesced(q)
		}
		for _, env := range b.GetEnvelopes() {
			m := &raftpb.Message{}
			if err := proto.Unmarshal(env.GetMessage(), m); err != nil {
				return fmt.Errorf("decode raft message for group %d: %w", env.GetGroup(), err)
			}
			h := s.handler(env.GetGroup(), m.GetTo())
			switch {
			case h == nil: // a stopped member just misses messages
			case !sameCopy(env.GetFoundingToken(), h):
				s.droppedOtherCopy(env.GetGroup(), m.GetTo(), env.GetFoundingToken())
			default:
				_ = h.Step(ctx, m)
			}
		}
	}
}

// Snapshot implements transportpb.RaftServer.
func (s *Server) Snapshot(stream grpc.ClientStreamingServer[transportpb.SnapshotChunk, transportpb.Ack]) error {
	var (
		group, token uint64
		m            *raftpb.Message
		data         []byte
	)
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if m == nil {
			group, token = c.GetGroup(), c.GetFoundingToken()
			m = &raftpb.Message{}
			if err := proto.Unmarshal(c.GetMessage(), m); err != nil {
				return fmt.Errorf("decode snapshot message: %w", err)
			}
			// Refused before the data: the other copy would send its
			// snapshot again and again.
			if h := s.handler(group, m.GetTo()); h != nil {
				if err := s.checkCopy(group, m.GetTo(), token, h); err != nil {
					return err
				}
			}
		}
		data = append(data, c.GetData()...)
	}
	if m == nil || m.GetSnapshot() == nil {
		return errors.New("transport: empty snapshot stream")
	}
	h := s.handler(group, m.GetTo())
	if h == nil {
		return fmt.Errorf("group %d member %d: %w", group, m.GetTo(), ErrUnknownPeer)
	}
	if err := s.checkCopy(group, m.GetTo(), token, h); err != nil { // h may have joined since the first chunk
		return err
	}
	m.Snapshot.Data = data
	if err := h.Step(stream.Context(), m); err != nil {
		return err
	}
	return stream.SendAndClose(&transportpb.Ack{})
}

// Member implements transportpb.RaftServer: what this process's replica of
// the group knows of member id. A process hosting several replicas of the
// group (the dev cluster) answers with its leader's view, if it hosts the
// leader.
func (s *Server) Member(_ context.Context, req *transportpb.MemberRequest) (*transportpb.MemberReply, error) {
	s.mu.RLock()
	var hs []Handler
	for m, h := range s.handlers {
		if m.group == req.GetGroup() && m.id != req.GetId() {
			hs = append(hs, h)
		}
	}
	s.mu.RUnlock()
	if len(hs) == 0 {
		return &transportpb.MemberReply{}, nil
	}
	reply := &transportpb.MemberReply{Hosted: true}
	for _, h := range hs {
		r, ok := h.(MemberReporter)
		if !ok {
			continue
		}
		info := r.MemberProgress(req.GetId())
		// What any replica here knows of the member counts; the leader's
		// view, if one is here, wins for the rest.
		reply.Removed = reply.Removed || info.Removed
		reply.Heard = reply.Heard || info.Heard
		if !reply.Leader {
			reply.Leader, reply.Term, reply.Match, reply.Learner = info.Leader, info.Term, info.Match, info.Learner
			reply.FoundingToken = info.FoundingToken
		}
	}
	return reply, nil
}

// AskMember asks the process at addr what its replica of group knows of
// member id (see Server.Member).
func AskMember(ctx context.Context, addr string, group, id uint64, dial ...grpc.DialOption) (*transportpb.MemberReply, error) {
	if len(dial) == 0 {
		dial = rpc.DialOptions()
	}
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return transportpb.NewRaftClient(conn).Member(ctx, &transportpb.MemberRequest{Group: group, Id: id})
}

// Resolver maps a member of a group to the address of the process that
// hosts it.
type Resolver func(group, id uint64) (addr string, ok bool)

// GRPCNetwork is the production Network: one Server for incoming messages,
// and one connection and one message stream per peer process for outgoing
// ones, shared by every local replica.
type GRPCNetwork struct {
	server  *Server
	resolve Resolver
	dial    []grpc.DialOption

	mu       sync.Mutex
	peers    map[string]*peer
	closed   bool
	set      map[[2]uint64]string // addresses set by SetAddr: [group, id] -> addr
	quiesced map[member]uint64    // local replicas that are quiesced (Quiescence): their founding tokens
}

// NewGRPCNetwork returns a network that receives through server and sends
// to the addresses resolve gives. Without dial options, connections use
// shardkv's defaults: plaintext, keepalive, message limits, reconnection
// backoff capped at one second and fixed flow-control windows. Any dial
// option replaces those defaults whole (unlike client.WithDialOptions,
// which adds to them): pass every option wanted, TLS credentials included.
func NewGRPCNetwork(server *Server, resolve Resolver, dial ...grpc.DialOption) *GRPCNetwork {
	if len(dial) == 0 {
		dial = rpc.DialOptions()
	}
	return &GRPCNetwork{server: server, resolve: resolve, dial: dial, peers: make(map[string]*peer),
		set: map[[2]uint64]string{}, quiesced: map[member]uint64{}}
}

// Join implements Network.
func (n *GRPCNetwork) Join(group, id uint64, h Handler) (Transport, error) {
	n.server.mu.Lock()
	defer n.server.mu.Unlock()
	m := member{group, id}
	if _, ok := n.server.handlers[m]; ok {
		return nil, fmt.Errorf("transport: group %d member %d already joined", group, id)
	}
	n.server.handlers[m] = h
	return &grpcTransport{net: n, self: m, h: h, token: foundingToken(h)}, nil
}

// Addr implements Addresser.
// An address set by SetAddr wins over the resolver's.
func (n *GRPCNetwork) Addr(group, id uint64) (string, bool) {
	n.mu.Lock()
	addr, ok := n.set[[2]uint64{group, id}]
	n.mu.Unlock()
	if ok {
		return addr, true
	}
	return n.resolve(group, id)
}

// SetAddr implements AddrSetter.
func (n *GRPCNetwork) SetAddr(group, id uint64, addr string) {
	n.mu.Lock()
	n.set[[2]uint64{group, id}] = addr
	n.mu.Unlock()
}

// Forget drops the addresses SetAddr recorded for group's members: the
// process no longer hosts a replica of the group (the node unhosted it). A
// replica of the group it hosts later (another copy of the id, say) must
// address its own members, not the old copy's at the ids they share.
func (n *GRPCNetwork) Forget(group uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k := range n.set {
		if k[0] == group {
			delete(n.set, k)
		}
	}
}

// quiescedList is what this process names to peer p: every local replica
// that is quiesced, of the groups it sent p messages for (nil if none).
// A process hosting replicas of a hundred groups so tells each peer of
// the groups they share, not of every group it hosts.
func (n *GRPCNetwork) quiescedList(p *peer) []*transportpb.Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*transportpb.Member
	for m, token := range n.quiesced {
		if p.groups[m.group] {
			out = append(out, &transportpb.Member{Group: m.group, Id: m.id, FoundingToken: token})
		}
	}
	return out
}

// setQuiesced names, or stops naming, member m (whose handler is h)
// quiesced. A member whose transport closed is never named again, even by
// a late call: its process would vouch for a stopped replica.
func (n *GRPCNetwork) setQuiesced(m member, h Handler, q bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if q && n.server.handler(m.group, m.id) == h {
		n.quiesced[m] = foundingToken(h)
	} else if !q {
		delete(n.quiesced, m)
	}
}

// Close closes every outgoing connection.
func (n *GRPCNetwork) Close() error {
	n.mu.Lock()
	peers := n.peers
	n.peers = map[string]*peer{}
	n.closed = true
	n.mu.Unlock()
	for _, p := range peers {
		p.close()
	}
	return nil
}

func (n *GRPCNetwork) peer(group, id uint64) (*peer, error) {
	addr, ok := n.Addr(group, id)
	if !ok {
		return nil, fmt.Errorf("group %d member %d: %w", group, id, ErrUnknownPeer)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errors.New("transport: network closed")
	}
	if p, ok := n.peers[addr]; ok {
		p.groups[group] = true
		return p, nil
	}
	conn, err := grpc.NewClient(addr, n.dial...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	p := &peer{
		addr:   addr,
		conn:   conn,
		client: transportpb.NewRaftClient(conn),
		queue:  make(chan outgoing, queueLen),
		stop:   make(chan struct{}),
		groups: map[uint64]bool{group: true},
	}
	p.quiesced = func() []*transportpb.Member { return n.quiescedList(p) }
	n.peers[addr] = p
	go p.run()
	return p, nil
}

type outgoing struct {
	env  *transportpb.Envelope
	to   uint64
	from Handler
	// lazy: a plain heartbeat or response, which may wait up to
	// coalesceWindow for other messages to the same peer process.
	lazy bool
}

// lazy reports whether m may be held back up to coalesceWindow: a
// heartbeat or heartbeat response without a context. Raft tolerates
// delayed and reordered messages; a heartbeat's commit index never exceeds
// what its follower acknowledged having (raft sends min(match, committed)),
// so a late one commits nothing the follower lacks. A heartbeat with a
// context confirms a ReadIndex, and a read waits for it: never held.
func lazy(m *raftpb.Message) bool {
	t := m.GetType()
	return (t == raftpb.MessageType_MsgHeartbeat || t == raftpb.MessageType_MsgHeartbeatResp) && len(m.GetContext()) == 0
}

// peer is the outgoing side of one peer process: a queue and the goroutine
// that drains it into one long-lived stream.
type peer struct {
	addr   string
	conn   *grpc.ClientConn
	client transportpb.RaftClient
	queue  chan outgoing
	stop   chan struct{}
	once   sync.Once
	// quiesced lists the process's quiesced replicas the peer is told of
	// every QuiescedInterval.
	quiesced func() []*transportpb.Member
	groups   map[uint64]bool // groups messages went to the peer for (GRPCNetwork.mu)
}

func (p *peer) close() {
	p.once.Do(func() { close(p.stop) })
	_ = p.conn.Close()
}

// run drains the queue into the peer's stream until the peer is closed.
func (p *peer) run() {
	l := &sendLoop{p: p, cancel: func() {}}
	defer func() { l.cancel() }()
	l.b = rpc.NewBackoff(10*time.Millisecond, time.Second)
	l.flush = time.NewTimer(time.Hour)
	l.flush.Stop()
	defer l.flush.Stop()
	// names: every QuiescedInterval the process's quiesced replicas are
	// named to the peer (with the next batch, or alone).
	names := time.NewTicker(QuiescedInterval)
	defer names.Stop()
	for {
		l.batch = l.batch[:0]
		quiesced, ok := l.take(names.C)
		if !ok {
			return
		}
		// Whatever is held goes now (heartbeats are tens of bytes), and
		// first: it was queued before the rest, and a heartbeat sent after
		// a newer message would undo what that one said (a quiescing
		// heartbeat, say).
		if len(l.held) > 0 {
			l.flush.Stop()
			l.batch = append(slices.Clone(l.held), l.batch...)
			l.held = l.held[:0]
		}
		if len(l.batch) == 0 && len(quiesced) == 0 {
			continue
		}
		if l.fill() > rpc.MaxMessageBytes {
			// Cannot be sent at all: tell raft, which will retry or
			// snapshot, rather than break the stream for everyone.
			unreachable(l.batch)
			continue
		}
		if !l.send(quiesced) {
			return
		}
	}
}

// sendLoop is the state of a peer's run loop: its stream, and the
// messages taken from the queue and not yet sent.
type sendLoop struct {
	p      *peer
	stream grpc.ClientStreamingClient[transportpb.Batch, transportpb.Ack]
	cancel context.CancelFunc
	b      *backoff.ExponentialBackOff
	batch  []outgoing
	next   *outgoing // taken from the queue, did not fit the last batch
	// held are lazy messages waiting (at most coalesceWindow, armed by
	// flush) to go with the next batch.
	held  []outgoing
	flush *time.Timer
}

// take starts the next batch: with the message left over from the last,
// else with the next one queued that is not lazy (a lazy one is held), or
// with none when flush fires or names ticks (then with the quiesced
// replicas to name). ok is false once the peer is closed.
func (l *sendLoop) take(names <-chan time.Time) (quiesced []*transportpb.Member, ok bool) {
	if l.next != nil {
		l.batch, l.next = append(l.batch, *l.next), nil
		return nil, true
	}
	for {
		select {
		case o := <-l.p.queue:
			if !o.lazy {
				l.batch = append(l.batch, o)
				return nil, true
			}
			if len(l.held) == 0 {
				l.flush.Reset(coalesceWindow)
			}
			l.held = append(l.held, o)
		case <-l.flush.C:
			return nil, true
		case <-names:
			return l.p.quiesced(), true
		case <-l.p.stop:
			return nil, false
		}
	}
}

// fill adds what is queued to the batch, keeping the first message that
// does not fit for the next one, and returns the batch's size. A batch
// holds at most maxBatchBytes of messages, or one larger message alone,
// so it always stays below the receiver's limit (raft bounds one append
// message by MaxSizePerMsg plus one entry).
func (l *sendLoop) fill() (size int) {
	for _, o := range l.batch {
		size += envelopeSize(o)
	}
	for {
		select {
		case o := <-l.p.queue:
			if size+envelopeSize(o) > maxBatchBytes {
				l.next = &o
				return size
			}
			l.batch = append(l.batch, o)
			size += envelopeSize(o)
		default:
			return size
		}
	}
}

// send sends the batch, and names quiesced, on the stream, opening one if
// there is none. The batch's messages are reported unreachable if they
// could not go; after a failed open it waits out a backoff, and returns
// false if the peer is closed meanwhile.
func (l *sendLoop) send(quiesced []*transportpb.Member) bool {
	if l.stream == nil {
		s, c, err := l.p.open()
		if err != nil {
			unreachable(l.batch)
			t := time.NewTimer(l.b.NextBackOff())
			select {
			case <-t.C:
			case <-l.p.stop:
				t.Stop()
				return false
			}
			return true
		}
		l.stream, l.cancel = s, c
		l.b.Reset()
	}
	envs := make([]*transportpb.Envelope, len(l.batch))
	for i, o := range l.batch {
		envs[i] = o.env
	}
	if err := l.stream.Send(&transportpb.Batch{Envelopes: envs, Quiesced: quiesced}); err != nil {
		l.cancel()
		l.stream = nil
		unreachable(l.batch)
	}
	return true
}

// open starts a message stream; cancel ends it.
func (p *peer) open() (grpc.ClientStreamingClient[transportpb.Batch, transportpb.Ack], context.CancelFunc, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := p.client.Stream(ctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	// The server answers a client stream only when it ends it (a refusal,
	// such as another cluster's id, or its shutdown): end ours then too, so
	// the next Send fails and its messages are reported unreachable.
	go func() {
		_ = s.RecvMsg(&transportpb.Ack{})
		cancel()
	}()
	return s, cancel, nil
}

// envelopeSize is what o adds to a batch on the wire, framing included.
func envelopeSize(o outgoing) int { return proto.Size(o.env) + 8 }

func unreachable(batch []outgoing) {
	for _, o := range batch {
		o.from.ReportUnreachable(o.to)
	}
}

type grpcTransport struct {
	net   *GRPCNetwork
	self  member
	h     Handler
	token uint64 // the member's founding token, stamped on what it sends
}

// Send implements Transport.
func (t *grpcTransport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		p, err := t.net.peer(t.self.group, m.GetTo())
		if err != nil {
			t.h.ReportUnreachable(m.GetTo())
			continue
		}
		b, err := proto.Marshal(m)
		if err != nil {
			continue
		}
		select {
		case p.queue <- outgoing{env: &transportpb.Envelope{Group: t.self.group, Message: b, FoundingToken: t.token}, to: m.GetTo(), from: t.h, lazy: lazy(m)}:
		default:
			t.h.ReportUnreachable(m.GetTo())
		}
	}
}

// SendSnapshot implements Transport: the data goes in chunks of at most
// snapshotChunkSize bytes.
func (t *grpcTransport) SendSnapshot(ctx context.Context, m *raftpb.Message) error {
	p, err := t.net.peer(t.self.group, m.GetTo())
	if err != nil {
		return err
	}
	data := m.GetSnapshot().GetData()
	head := proto.Clone(m).(*raftpb.Message)
	head.Snapshot.Data = nil
	hb, err := proto.Marshal(head)
	if err != nil {
		return err
	}
	stream, err := p.client.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("snapshot to %s: %w", p.addr, err)
	}
	first := true
	for first || len(data) > 0 {
		n := min(len(data), snapshotChunkSize)
		c := &transportpb.SnapshotChunk{Data: data[:n]}
		if first {
			c.Group, c.Message, c.FoundingToken = t.self.group, hb, t.token
			first = false
		}
		if err := stream.Send(c); err != nil {
			if errors.Is(err, io.EOF) {
				// The server ended the stream (a refusal, such as another
				// cluster's id): its status comes with the receive.
				if _, rerr := stream.CloseAndRecv(); rerr != nil {
					err = rerr
				}
			}
			return fmt.Errorf("snapshot to %s: %w", p.addr, err)
		}
		data = data[n:]
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return fmt.Errorf("snapshot to %s: %w", p.addr, err)
	}
	return nil
}

// SetQuiesced implements Quiescence.
func (t *grpcTransport) SetQuiesced(q bool) { t.net.setQuiesced(t.self, t.h, q) }

// QuiescedAt implements Quiescence.
func (t *grpcTransport) QuiescedAt(id uint64) time.Time {
	return t.net.server.QuiescedAt(t.self.group, id, t.token)
}

// Close implements Transport: the member stops receiving, and its process
// stops naming it quiesced.
func (t *grpcTransport) Close() error {
	t.net.server.mu.Lock()
	delete(t.net.server.handlers, t.self)
	t.net.server.mu.Unlock()
	t.net.setQuiesced(t.self, t.h, false)
	return nil
}
