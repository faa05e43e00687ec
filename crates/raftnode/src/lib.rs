//! raftnode: the Raft driver of raftkv (under construction; the interfaces
//! below are the contract the kvstore and api layers are written against).

mod interface;

pub use interface::{
    BoxFuture, Consensus, MembershipChange, Member, RaftError, RestoreError, Role, StateMachine,
    Status,
};
