package gossip

import "fmt"

// EventType says what happened to a member or its record.
type EventType uint8

const (
	// EventMemberJoin: a member became alive (new, or back after failing).
	EventMemberJoin EventType = iota + 1
	// EventMemberLeave: a member left gracefully.
	EventMemberLeave
	// EventMemberFailed: memberlist declared a member dead.
	EventMemberFailed
	// EventMemberUpdate: a member's metadata changed.
	EventMemberUpdate
	// EventRecordUpdate: a newer capacity record replaced the previous one.
	EventRecordUpdate
)

// String names the event type.
func (t EventType) String() string {
	switch t {
	case EventMemberJoin:
		return "member-join"
	case EventMemberLeave:
		return "member-leave"
	case EventMemberFailed:
		return "member-failed"
	case EventMemberUpdate:
		return "member-update"
	case EventRecordUpdate:
		return "record-update"
	}
	return fmt.Sprintf("unknown(%d)", uint8(t))
}

// Event is one change in the view, as delivered to subscribers.
type Event struct {
	// Type says what happened.
	Type EventType
	// Member is the member concerned, as it is after the change. For
	// EventRecordUpdate it is the zero Member when the record's owner is not
	// (yet) a known member.
	Member Member
	// Record is the new record, for EventRecordUpdate only.
	Record *Record
}
