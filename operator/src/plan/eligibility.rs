//! Whether a tenant may have a lease at all, before any capacity is looked at: the lease's
//! namespace belongs to a tenant, the tenant is not suspended, the pool is one it may use;
//! and, once nodes are chosen, whether the lease's most expensive outcome fits its credit
//! limit.

use rust_decimal::Decimal;

/// What eligibility needs to know about the tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantView {
    pub name: String,
    pub suspended: bool,
    /// Pools the tenant may lease from; empty means every pool.
    pub allowed_pools: Vec<String>,
    pub credit_limit: Option<Decimal>,
    /// What the tenant owes so far in the open period, and what its other admitted
    /// leases may still cost at most.
    pub open_balance: Decimal,
    pub committed: Decimal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Eligible,
    /// Waits: may change without the lease changing (a tenant unsuspended, credit freed).
    Wait {
        reason: &'static str,
        message: String,
    },
    /// Rejected: only a different lease could pass.
    Reject {
        reason: &'static str,
        message: String,
    },
}

/// Whether a lease in `namespace` may ask `pool` at all.
pub fn check(tenant: Option<&TenantView>, namespace: &str, pool: &str) -> Verdict {
    let Some(tenant) = tenant else {
        return Verdict::Reject {
            reason: "NotATenantNamespace",
            message: format!(
                "namespace {namespace} belongs to no Tenant; leases are made in a tenant's namespaces"
            ),
        };
    };
    if tenant.suspended {
        return Verdict::Wait {
            reason: "TenantSuspended",
            message: format!(
                "tenant {} is suspended; no new leases are admitted",
                tenant.name
            ),
        };
    }
    if !tenant.allowed_pools.is_empty() && !tenant.allowed_pools.iter().any(|p| p == pool) {
        return Verdict::Reject {
            reason: "PoolNotAllowed",
            message: format!(
                "tenant {} may lease from pools [{}], not {pool}",
                tenant.name,
                tenant.allowed_pools.join(", ")
            ),
        };
    }
    Verdict::Eligible
}

/// Why admitting a lease that may cost up to `worst_case` would take the tenant past its
/// credit limit, if it would: its term at its maximum price (Spot) or at the Reserved
/// rate of the nodes it gets.
pub fn over_credit(tenant: &TenantView, worst_case: Decimal) -> Option<String> {
    let limit = tenant.credit_limit?;
    let exposure = tenant.open_balance + tenant.committed + worst_case;
    (exposure > limit).then(|| {
        format!(
            "tenant {}: open balance {} + other leases up to {} + this lease up to {worst_case} = {exposure}, above the credit limit {limit}",
            tenant.name, tenant.open_balance, tenant.committed
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> TenantView {
        TenantView {
            name: "acme".into(),
            suspended: false,
            allowed_pools: vec!["general".into()],
            credit_limit: Some(Decimal::new(10000, 2)),
            open_balance: Decimal::new(4000, 2),
            committed: Decimal::new(2000, 2),
        }
    }

    #[test]
    fn a_lease_within_limits_is_eligible() {
        assert_eq!(check(Some(&acme()), "acme", "general"), Verdict::Eligible);
        assert_eq!(over_credit(&acme(), Decimal::new(4000, 2)), None);
    }

    #[test]
    fn the_credit_limit_counts_balance_commitments_and_the_worst_case() {
        assert_eq!(
            over_credit(&acme(), Decimal::new(4001, 2)).as_deref(),
            Some(
                "tenant acme: open balance 40.00 + other leases up to 20.00 + this lease up to 40.01 = 100.01, above the credit limit 100.00"
            )
        );
        let mut unlimited = acme();
        unlimited.credit_limit = None;
        assert_eq!(over_credit(&unlimited, Decimal::from(1_000_000_000)), None);
    }

    #[test]
    fn pools_suspension_and_namespaces_are_checked() {
        assert!(matches!(
            check(Some(&acme()), "acme", "gpu"),
            Verdict::Reject {
                reason: "PoolNotAllowed",
                ..
            }
        ));
        let mut suspended = acme();
        suspended.suspended = true;
        assert!(matches!(
            check(Some(&suspended), "acme", "general"),
            Verdict::Wait {
                reason: "TenantSuspended",
                ..
            }
        ));
        assert!(matches!(
            check(None, "default", "general"),
            Verdict::Reject {
                reason: "NotATenantNamespace",
                ..
            }
        ));
        let mut anywhere = acme();
        anywhere.allowed_pools.clear();
        assert_eq!(check(Some(&anywhere), "acme", "gpu"), Verdict::Eligible);
    }
}
