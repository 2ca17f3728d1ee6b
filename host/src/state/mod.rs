//! Keyed state: the host-held [`StateStore`] and the operators that keep state in it,
//! updateStateByKey and mapWithState (with its state snapshots).

mod map_with_state;
mod store;
mod update;

pub use map_with_state::{MapWithState, StateSnapshots};
pub use store::{Entry, EntryMut, KeyStates, StateStore};
pub use update::UpdateStateByKey;
