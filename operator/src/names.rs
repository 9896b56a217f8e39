//! The labels, taints, annotations and object names Offpeak writes, in one place, so the
//! webhook, the policies and the controllers always agree.

/// Field manager of every server-side apply Offpeak makes.
pub const FIELD_MANAGER: &str = "offpeak";

/// On a namespace: the tenant that owns it. On a node: the tenant it is lent to. Also the
/// key of the taint that keeps everyone else's pods off a lent node.
pub const TENANT: &str = "offpeak.dev/tenant";
/// On a lent node: the UID of the lease it serves (a fixed length, whatever the lease's
/// namespace and name).
pub const LEASE: &str = "offpeak.dev/lease";
/// On a lent node: `<namespace>/<name>` of the lease it serves, for people.
pub const LEASE_NAME: &str = "offpeak.dev/lease-name";
/// The NoSchedule taint on the nodes of a lease under notice: Offpeak's own cordon, told
/// apart from anyone else's `unschedulable`.
pub const RECLAIMING: &str = "offpeak.dev/reclaiming";
/// On a node: when it was first seen idle (RFC 3339), so idle-after survives restarts.
pub const IDLE_SINCE: &str = "offpeak.dev/idle-since";

/// On a lease: its nodes go back before the object goes.
pub const FINALIZER: &str = "offpeak.dev/return-nodes";

/// The PriorityClass of tenant pods, below every internal class.
pub const TENANT_PRIORITY_CLASS: &str = "offpeak-tenant";
pub const TENANT_PRIORITY: i32 = -1000;
/// Tenant pods never preempt: they have their own nodes.
pub const TENANT_PREEMPTION: &str = "Never";

/// The ValidatingAdmissionPolicy (and binding) that keeps tenant pods on their nodes.
pub const CONFINEMENT_POLICY: &str = "offpeak-tenant-confinement";
/// The MutatingWebhookConfiguration that places tenant pods on their nodes.
pub const CONFINEMENT_WEBHOOK: &str = "offpeak-tenant-pods";
/// The MutatingWebhookConfiguration that gives new leases their finalizer.
pub const LEASE_WEBHOOK: &str = "offpeak-leases";
