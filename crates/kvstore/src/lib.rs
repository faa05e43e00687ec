//! kvstore (under construction)
