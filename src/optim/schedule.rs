//! Learning-rate schedules.

/// How the learning rate changes with the step number (counted from 0).
///
/// ```
/// use adgraph::optim::Schedule;
/// assert_eq!(Schedule::Constant(0.1).rate(1000), 0.1);
/// let step = Schedule::Step { initial: 1.0, every: 10, factor: 0.5 };
/// assert_eq!(step.rate(9), 1.0);
/// assert_eq!(step.rate(25), 0.25);
/// let cos = Schedule::Cosine { initial: 1.0, minimum: 0.0, total_steps: 100 };
/// assert_eq!(cos.rate(0), 1.0);
/// assert!((cos.rate(50) - 0.5).abs() < 1e-6);
/// assert_eq!(cos.rate(200), 0.0);
/// ```
#[derive(Clone)]
pub enum Schedule {
    /// The same rate at every step.
    Constant(f32),
    /// `initial * factor^(step / every)`.
    Step {
        /// The rate at step 0.
        initial: f32,
        /// Steps between two decays.
        every: u64,
        /// Multiplier applied at each decay.
        factor: f32,
    },
    /// Cosine decay from `initial` to `minimum` over `total_steps`, then `minimum`.
    Cosine {
        /// The rate at step 0.
        initial: f32,
        /// The rate at and after `total_steps`.
        minimum: f32,
        /// Length of the decay.
        total_steps: u64,
    },
    /// Any function of the step.
    Custom(std::rc::Rc<dyn Fn(u64) -> f32>),
}

impl Schedule {
    /// The learning rate at `step`.
    pub fn rate(&self, step: u64) -> f32 {
        match self {
            Schedule::Constant(r) => *r,
            Schedule::Step {
                initial,
                every,
                factor,
            } => initial * factor.powi((step / (*every).max(1)) as i32),
            Schedule::Cosine {
                initial,
                minimum,
                total_steps,
            } => {
                if step >= *total_steps {
                    return *minimum;
                }
                let progress = step as f64 / (*total_steps).max(1) as f64;
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                minimum + (initial - minimum) * cos as f32
            }
            Schedule::Custom(f) => f(step),
        }
    }
}
