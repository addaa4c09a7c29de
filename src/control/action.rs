//! The audit log's `action` of each change: the one place these names are
//! written. `Change::action` and `RolloutStep::action` give them, and the
//! admin API audits a call refused before it became a change under the
//! same name.

pub const SET_SPLIT: &str = "set_split";
pub const SET_MIRROR: &str = "set_mirror";
pub const ADD_UPSTREAM: &str = "add_upstream";
pub const REMOVE_UPSTREAM: &str = "remove_upstream";
pub const REMOVE_DRAINED_UPSTREAM: &str = "remove_drained_upstream";
pub const DISABLE_UPSTREAM: &str = "disable_upstream";
pub const ENABLE_UPSTREAM: &str = "enable_upstream";
pub const DRAIN_UPSTREAM: &str = "drain_upstream";
pub const DRAIN_POOL: &str = "drain_pool";
pub const START_ROLLOUT: &str = "start_rollout";
pub const ROLLOUT_BEGIN: &str = "rollout_begin";
pub const ROLLOUT_ADVANCE: &str = "rollout_advance";
pub const PROMOTE_ROLLOUT: &str = "promote_rollout";
pub const ROLLOUT_PROMOTED: &str = "rollout_promoted";
pub const ROLLOUT_ROLLED_BACK: &str = "rollout_rolled_back";
pub const ABORT_ROLLOUT: &str = "abort_rollout";
pub const PAUSE_ROLLOUT: &str = "pause_rollout";
pub const ROLLOUT_INCONCLUSIVE: &str = "rollout_inconclusive";
pub const RESUME_ROLLOUT: &str = "resume_rollout";
pub const UNDO: &str = "undo";
pub const ROLLOUT_DRY_RUN_BREACH: &str = "rollout_dry_run_breach";
