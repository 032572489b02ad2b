//! A [`CertificateControl`] in memory for use-case tests: the certificates a test gives it, every
//! switch recorded, and an outage switch. The real adapter is tested against moto's IoT control
//! plane (`tests/tests/store_contract/certificate_control.rs`) and on the local stack.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use async_trait::async_trait;
use claim_shared::{
    domain::quarantine::CertificateFacts,
    ports::{CertificateControl, ControlError},
};

#[derive(Clone, Default)]
pub struct RecordingControl {
    certificates: Arc<Mutex<HashMap<String, CertificateFacts>>>,
    switches: Arc<Mutex<Vec<(String, bool)>>>,
    down: Arc<AtomicBool>,
}

impl RecordingControl {
    /// An active certificate `id` issued by the CA `ca`.
    pub fn issue(&self, id: &str, ca: &str) {
        self.lock_certificates().insert(
            id.to_owned(),
            CertificateFacts {
                ca_certificate_id: Some(ca.to_owned()),
                active: true,
            },
        );
    }

    pub fn is_active(&self, id: &str) -> Option<bool> {
        self.lock_certificates().get(id).map(|facts| facts.active)
    }

    /// Every `set_active` call that reached the control plane, in order.
    pub fn switches(&self) -> Vec<(String, bool)> {
        self.switches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn lock_certificates(&self) -> std::sync::MutexGuard<'_, HashMap<String, CertificateFacts>> {
        self.certificates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reachable(&self) -> Result<(), ControlError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ControlError("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl CertificateControl for RecordingControl {
    async fn describe(&self, certificate_id: &str) -> Result<Option<CertificateFacts>, ControlError> {
        self.reachable()?;
        Ok(self.lock_certificates().get(certificate_id).cloned())
    }

    async fn set_active(&self, certificate_id: &str, active: bool) -> Result<(), ControlError> {
        self.reachable()?;
        let mut certificates = self.lock_certificates();
        let facts = certificates
            .get_mut(certificate_id)
            .ok_or_else(|| ControlError(format!("ResourceNotFoundException: {certificate_id}")))?;
        facts.active = active;
        self.switches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((certificate_id.to_owned(), active));
        Ok(())
    }
}
