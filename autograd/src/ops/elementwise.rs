//! Element-wise ops with broadcasting, scalar variants and activations:
//! forward and backward side by side. Gradients of broadcast operands are
//! summed back over the broadcast axes.

use anneal_tensor::{sigmoid_scalar, Element, Result, Tensor};

use crate::Var;

#[inline(always)]
fn c<T: Element>(x: f64) -> T {
    T::from_f64_lossy(x)
}

/// Standard normal density `φ(x) = exp(−x²/2)/√(2π)`.
#[inline(always)]
fn normal_pdf<T: Element>(x: T) -> T {
    (-(x * x) * c(0.5)).exp() * c(0.398_942_280_401_432_7)
}

impl<T: Element> Var<T> {
    /// `self + other`, broadcasting. `∂/∂a = g`, `∂/∂b = g` (summed to shape).
    pub fn add(&self, other: &Self) -> Result<Self> {
        let y = self.value().add(other.value())?;
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        Ok(Var::from_op("add", y, &[self, other], move |g, _| {
            Ok(vec![Some(g.sum_to_shape(&sa)?), Some(g.sum_to_shape(&sb)?)])
        }))
    }

    /// `self − other`, broadcasting. `∂/∂a = g`, `∂/∂b = −g`.
    pub fn sub(&self, other: &Self) -> Result<Self> {
        let y = self.value().sub(other.value())?;
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        Ok(Var::from_op("sub", y, &[self, other], move |g, need| {
            let gb = if need[1] {
                Some(g.neg().sum_to_shape(&sb)?)
            } else {
                None
            };
            Ok(vec![Some(g.sum_to_shape(&sa)?), gb])
        }))
    }

    /// `self ⊙ other`, broadcasting. `∂/∂a = g·b`, `∂/∂b = g·a`.
    pub fn mul(&self, other: &Self) -> Result<Self> {
        let y = self.value().mul(other.value())?;
        let (a, b) = (self.value().clone(), other.value().clone());
        Ok(Var::from_op("mul", y, &[self, other], move |g, need| {
            let ga = if need[0] {
                Some(g.mul(&b)?.sum_to_shape(a.shape())?)
            } else {
                None
            };
            let gb = if need[1] {
                Some(g.mul(&a)?.sum_to_shape(b.shape())?)
            } else {
                None
            };
            Ok(vec![ga, gb])
        }))
    }

    /// `self / other`, broadcasting. `∂/∂a = g/b`, `∂/∂b = −g·a/b²`.
    pub fn div(&self, other: &Self) -> Result<Self> {
        let y = self.value().div(other.value())?;
        let (a, b) = (self.value().clone(), other.value().clone());
        Ok(Var::from_op("div", y, &[self, other], move |g, need| {
            let ga = if need[0] {
                Some(g.div(&b)?.sum_to_shape(a.shape())?)
            } else {
                None
            };
            let gb = if need[1] {
                let t = g.mul(&a)?.zip_with(&b, "div", |ga, b| -ga / (b * b))?;
                Some(t.sum_to_shape(b.shape())?)
            } else {
                None
            };
            Ok(vec![ga, gb])
        }))
    }

    /// `selfᵒᵗʰᵉʳ`, broadcasting. `∂/∂a = g·b·aᵇ⁻¹`, `∂/∂b = g·aᵇ·ln a`.
    pub fn pow(&self, other: &Self) -> Result<Self> {
        let y = self.value().pow(other.value())?;
        let (a, b, yv) = (self.value().clone(), other.value().clone(), y.clone());
        Ok(Var::from_op("pow", y, &[self, other], move |g, need| {
            let ga = if need[0] {
                let d = a.zip_with(&b, "pow", |a, b| {
                    if b == T::zero() {
                        T::zero()
                    } else {
                        b * a.powf(b - T::one())
                    }
                })?;
                Some(g.mul(&d)?.sum_to_shape(a.shape())?)
            } else {
                None
            };
            let gb = if need[1] {
                // PyTorch masks a = 0 (and y = 0) to a zero gradient.
                let d = yv.zip_with(&a.broadcast_to(yv.shape())?, "pow", |y, a| {
                    if a == T::zero() {
                        T::zero()
                    } else {
                        y * a.ln()
                    }
                })?;
                Some(g.mul(&d)?.sum_to_shape(b.shape())?)
            } else {
                None
            };
            Ok(vec![ga, gb])
        }))
    }

    fn select_binary(
        &self,
        other: &Self,
        op: &'static str,
        take_a: fn(T, T) -> bool,
    ) -> Result<Self> {
        let y = if op == "maximum" {
            self.value().maximum(other.value())?
        } else {
            self.value().minimum(other.value())?
        };
        let (a, b) = (self.value().clone(), other.value().clone());
        Ok(Var::from_op(op, y, &[self, other], move |g, need| {
            // Ties split the gradient equally, as PyTorch's maximum/minimum.
            let wa = a.zip_with(&b, op, move |x, y| {
                if x == y {
                    c(0.5)
                } else if take_a(x, y) {
                    T::one()
                } else {
                    T::zero()
                }
            })?;
            let ga = if need[0] {
                Some(g.mul(&wa)?.sum_to_shape(a.shape())?)
            } else {
                None
            };
            let gb = if need[1] {
                Some(g.mul(&wa.map(|w| T::one() - w))?.sum_to_shape(b.shape())?)
            } else {
                None
            };
            Ok(vec![ga, gb])
        }))
    }

    /// Element-wise maximum, broadcasting; ties share the gradient equally.
    pub fn maximum(&self, other: &Self) -> Result<Self> {
        self.select_binary(other, "maximum", |x, y| x > y)
    }

    /// Element-wise minimum, broadcasting; ties share the gradient equally.
    pub fn minimum(&self, other: &Self) -> Result<Self> {
        self.select_binary(other, "minimum", |x, y| x < y)
    }

    /// A unary op whose derivative is computed from the input `x` and the
    /// output `y`: `∂/∂x = g · d(x, y)`.
    fn unary(
        &self,
        op: &'static str,
        y: Tensor<T>,
        d: impl Fn(T, T) -> T + Send + Sync + 'static,
    ) -> Self {
        let (x, yv) = (self.value().clone(), y.clone());
        Var::from_op(op, y, &[self], move |g, _| {
            let dx = x.zip_with(&yv, op, &d)?;
            Ok(vec![Some(g.mul(&dx)?)])
        })
    }

    /// `−x`.
    pub fn neg(&self) -> Self {
        Var::from_op("neg", self.value().neg(), &[self], |g, _| {
            Ok(vec![Some(g.neg())])
        })
    }

    /// `|x|`; the derivative at 0 is 0.
    pub fn abs(&self) -> Self {
        self.unary("abs", self.value().abs(), |x, _| {
            if x > T::zero() {
                T::one()
            } else if x < T::zero() {
                -T::one()
            } else {
                T::zero()
            }
        })
    }

    /// `eˣ`; `∂ = y`.
    pub fn exp(&self) -> Self {
        self.unary("exp", self.value().exp(), |_, y| y)
    }

    /// `ln x`; `∂ = 1/x`.
    pub fn ln(&self) -> Self {
        self.unary("ln", self.value().ln(), |x, _| x.recip())
    }

    /// `√x`; `∂ = 1/(2y)`.
    pub fn sqrt(&self) -> Self {
        self.unary("sqrt", self.value().sqrt(), |_, y| c::<T>(0.5) / y)
    }

    /// `x²`; `∂ = 2x`.
    pub fn square(&self) -> Self {
        self.unary("square", self.value().square(), |x, _| x + x)
    }

    /// `1/x`; `∂ = −y²`.
    pub fn recip(&self) -> Self {
        self.unary("recip", self.value().recip(), |_, y| -(y * y))
    }

    /// `tanh x`; `∂ = 1 − y²`.
    pub fn tanh(&self) -> Self {
        self.unary("tanh", self.value().tanh(), |_, y| T::one() - y * y)
    }

    /// Logistic sigmoid; `∂ = y(1 − y)`.
    pub fn sigmoid(&self) -> Self {
        self.unary("sigmoid", self.value().sigmoid(), |_, y| y * (T::one() - y))
    }

    /// `max(x, 0)`; the derivative at 0 is 0.
    pub fn relu(&self) -> Self {
        let y = self.value().relu();
        let kept = y.clone();
        Var::from_op("relu", y, &[self], move |g, _| {
            // PyTorch's threshold_backward in one pass: the gradient where
            // the output is positive (exactly where x > 0), else 0.
            let dx = g.zip_with(
                &kept,
                "relu",
                |g, y| if y > T::zero() { g } else { T::zero() },
            )?;
            Ok(vec![Some(dx)])
        })
    }

    /// `x` for `x > 0`, `slope·x` otherwise; the derivative at 0 is `slope`.
    pub fn leaky_relu(&self, slope: T) -> Self {
        self.unary("leaky_relu", self.value().leaky_relu(slope), move |x, _| {
            if x > T::zero() {
                T::one()
            } else {
                slope
            }
        })
    }

    /// Exact GELU `x·Φ(x)`; `∂ = Φ(x) + x·φ(x)`.
    pub fn gelu(&self) -> Self {
        self.unary("gelu", self.value().gelu(), |x, _| {
            let cdf = c::<T>(0.5) * (T::one() + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf());
            cdf + x * normal_pdf(x)
        })
    }

    /// GELU, tanh approximation; derivative of
    /// `x/2·(1 + tanh(k(x + 0.044715x³)))` with `k = √(2/π)`.
    pub fn gelu_tanh(&self) -> Self {
        self.unary("gelu_tanh", self.value().gelu_tanh(), |x, _| {
            let k: T = c(0.797_884_560_802_865_4);
            let inner = k * (x + c::<T>(0.044715) * x * x * x);
            let t = inner.tanh();
            c::<T>(0.5) * (T::one() + t)
                + c::<T>(0.5)
                    * x
                    * (T::one() - t * t)
                    * k
                    * (T::one() + c::<T>(3.0 * 0.044715) * x * x)
        })
    }

    /// SiLU `x·σ(x)`; `∂ = σ(x)(1 + x(1 − σ(x)))`.
    pub fn silu(&self) -> Self {
        self.unary("silu", self.value().silu(), |x, _| {
            let s = sigmoid_scalar(x);
            s * (T::one() + x * (T::one() - s))
        })
    }

    /// Sine.
    pub fn sin(&self) -> Self {
        self.unary("sin", self.value().sin(), |x, _| x.cos())
    }

    /// Cosine.
    pub fn cos(&self) -> Self {
        self.unary("cos", self.value().cos(), |x, _| -x.sin())
    }

    /// `x + s`.
    pub fn add_scalar(&self, s: T) -> Self {
        Var::from_op("add_scalar", self.value().add_scalar(s), &[self], |g, _| {
            Ok(vec![Some(g.clone())])
        })
    }

    /// `x · s`.
    pub fn mul_scalar(&self, s: T) -> Self {
        Var::from_op(
            "mul_scalar",
            self.value().mul_scalar(s),
            &[self],
            move |g, _| Ok(vec![Some(g.mul_scalar(s))]),
        )
    }

    /// `x / s`.
    pub fn div_scalar(&self, s: T) -> Self {
        self.mul_scalar(T::one() / s)
    }

    /// `xᵖ`; `∂ = p·xᵖ⁻¹`.
    pub fn powf(&self, p: T) -> Self {
        self.unary("powf", self.value().powf(p), move |x, _| {
            if p == T::zero() {
                T::zero()
            } else {
                p * x.powf(p - T::one())
            }
        })
    }

    /// Limits to `[min, max]`; the gradient passes where `min ≤ x ≤ max`
    /// (inclusive, as PyTorch's clamp).
    pub fn clamp(&self, min: Option<T>, max: Option<T>) -> Result<Self> {
        let y = self.value().clamp(min, max)?;
        let lo = min.unwrap_or_else(T::neg_infinity);
        let hi = max.unwrap_or_else(T::infinity);
        Ok(self.unary("clamp", y, move |x, _| {
            if x >= lo && x <= hi {
                T::one()
            } else {
                T::zero()
            }
        }))
    }
}
