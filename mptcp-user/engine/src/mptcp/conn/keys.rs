//! Keys, tokens and IDSNs of both ends.

use super::Shared;
use crate::crypto;

impl Shared {
    pub(super) fn set_remote_key(&mut self, key: u64) {
        self.remote_key = key;
        self.remote_key_known = true;
        self.remote_token = crypto::token(key);
        self.remote_idsn = crypto::idsn(key);
    }
}
