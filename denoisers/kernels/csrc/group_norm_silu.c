/* GroupNorm, optionally followed by SiLU, on channels-last (NHWC) float32 tensors, forward and backward.
 *
 * Why: on CPU, PyTorch's channels-last GroupNorm kernels run at a fraction of memory bandwidth (its
 * backward is several times slower than the contiguous-layout one), and GroupNorm and SiLU are two
 * more full passes over every activation. Here each image is one unit of work: its statistics pass, the
 * normalisation and the activation run while its activations sit in the core's L2 cache, so main memory
 * sees one read and one write per pass of the network.
 *
 * Layout: x[n][p][c] with p over the H*W pixels, c over the C channels; groups are runs of C/G adjacent
 * channels, as in torch.nn.GroupNorm. mean and rstd are (N, G), kept for the backward pass.
 *
 * Per-thread scratch is a few arrays of C floats on the thread's stack (44 KB at 1,024 channels).
 *
 * Statistics use two passes (mean, then the sum of squared deviations) with double accumulators: exact
 * enough when the mean is large against the spread, where E[x^2] - E[x]^2 would cancel.
 */

#include <math.h>
#include <string.h>

static inline float silu(float y) { return y / (1.0f + expf(-y)); }

/* d silu(y) / dy = s (1 + y (1 - s)), s = sigmoid(y) */
static inline float silu_grad(float y) {
    float s = 1.0f / (1.0f + expf(-y));
    return s * (1.0f + y * (1.0f - s));
}

/* Per-channel sums over the pixels of one image, rows of `width` pixels summed in float, then in double. */
static void channel_sums(const float *x, long pixels, long channels, const float *shift, double *out,
                         float *row) {
    const long width = 64;
    memset(out, 0, sizeof(double) * channels);
    for (long p0 = 0; p0 < pixels; p0 += width) {
        long p1 = p0 + width < pixels ? p0 + width : pixels;
        memset(row, 0, sizeof(float) * channels);
        for (long p = p0; p < p1; ++p) {
            const float *xp = x + p * channels;
            if (shift) {
                for (long c = 0; c < channels; ++c) {
                    float d = xp[c] - shift[c];
                    row[c] += d * d;
                }
            } else {
                for (long c = 0; c < channels; ++c) row[c] += xp[c];
            }
        }
        for (long c = 0; c < channels; ++c) out[c] += row[c];
    }
}

void gn_forward(const float *x, const float *weight, const float *bias, float *out, float *mean_out,
               float *rstd_out, long n_images, long pixels, long channels, long groups, float eps, int act,
               int threads) {
    const long per_group = channels / groups;
    const double count = (double)pixels * per_group;
#pragma omp parallel num_threads(threads)
    {
        double sums[channels];
        float row[channels], centre[channels], scale[channels], offset[channels];
#pragma omp for schedule(static)
        for (long n = 0; n < n_images; ++n) {
            const float *xn = x + n * pixels * channels;
            float *on = out + n * pixels * channels;
            channel_sums(xn, pixels, channels, NULL, sums, row);
            for (long g = 0; g < groups; ++g) {
                double s = 0.0;
                for (long c = g * per_group; c < (g + 1) * per_group; ++c) s += sums[c];
                mean_out[n * groups + g] = (float)(s / count);
                for (long c = g * per_group; c < (g + 1) * per_group; ++c) centre[c] = (float)(s / count);
            }
            channel_sums(xn, pixels, channels, centre, sums, row);
            for (long g = 0; g < groups; ++g) {
                double ss = 0.0;
                for (long c = g * per_group; c < (g + 1) * per_group; ++c) ss += sums[c];
                float r = (float)(1.0 / sqrt(ss / count + eps));
                rstd_out[n * groups + g] = r;
                for (long c = g * per_group; c < (g + 1) * per_group; ++c) {
                    scale[c] = r * weight[c];
                    offset[c] = bias[c] - centre[c] * r * weight[c];
                }
            }
            for (long p = 0; p < pixels; ++p) {
                const float *xp = xn + p * channels;
                float *op = on + p * channels;
                if (act) {
                    for (long c = 0; c < channels; ++c) op[c] = silu(xp[c] * scale[c] + offset[c]);
                } else {
                    for (long c = 0; c < channels; ++c) op[c] = xp[c] * scale[c] + offset[c];
                }
            }
        }
    }
}

/* dx, and per-image partial sums for the weight and bias gradients (dweight_parts, dbias_parts: N x C),
 * which the caller adds over images: summing them here in a fixed order keeps the result independent of
 * the thread count. */
void gn_backward(const float *x, const float *grad_out, const float *weight, const float *bias,
                const float *mean, const float *rstd, float *grad_in, float *dweight_parts, float *dbias_parts,
                long n_images, long pixels, long channels, long groups, int act, int threads) {
    const long per_group = channels / groups;
    const double count = (double)pixels * per_group;
#pragma omp parallel num_threads(threads)
    {
        double sum_dy[channels], sum_dyx[channels];
        float row_dy[channels], row_dyx[channels], scale[channels], offset[channels], k_dy[channels],
            k_x[channels], k_0[channels];
#pragma omp for schedule(static)
        for (long n = 0; n < n_images; ++n) {
            const float *xn = x + n * pixels * channels;
            const float *gn = grad_out + n * pixels * channels;
            float *dn = grad_in + n * pixels * channels; /* holds dL/dy (the norm's output) until pass 2 */
            for (long c = 0; c < channels; ++c) {
                float m = mean[n * groups + c / per_group], r = rstd[n * groups + c / per_group];
                scale[c] = r * weight[c];
                offset[c] = bias[c] - m * r * weight[c];
            }
            /* Pass 1: dL/dy through the activation, and per-channel sums of dy and dy * x. */
            memset(sum_dy, 0, sizeof(double) * channels);
            memset(sum_dyx, 0, sizeof(double) * channels);
            const long width = 64;
            for (long p0 = 0; p0 < pixels; p0 += width) {
                long p1 = p0 + width < pixels ? p0 + width : pixels;
                memset(row_dy, 0, sizeof(float) * channels);
                memset(row_dyx, 0, sizeof(float) * channels);
                for (long p = p0; p < p1; ++p) {
                    const float *xp = xn + p * channels, *gp = gn + p * channels;
                    float *dp = dn + p * channels;
                    if (act) {
                        for (long c = 0; c < channels; ++c) {
                            float dy = gp[c] * silu_grad(xp[c] * scale[c] + offset[c]);
                            dp[c] = dy;
                            row_dy[c] += dy;
                            row_dyx[c] += dy * xp[c];
                        }
                    } else {
                        for (long c = 0; c < channels; ++c) {
                            dp[c] = gp[c];
                            row_dy[c] += gp[c];
                            row_dyx[c] += gp[c] * xp[c];
                        }
                    }
                }
                for (long c = 0; c < channels; ++c) {
                    sum_dy[c] += row_dy[c];
                    sum_dyx[c] += row_dyx[c];
                }
            }
            /* With xhat = (x - m) r and dxhat = dy w:
             *   dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat))   (means over the group)
             *      = dy (r w) + x (-r^2 B) + (r^2 B m - r A),  A = mean(dxhat), B = mean(dxhat xhat) / r. */
            for (long g = 0; g < groups; ++g) {
                double m = mean[n * groups + g], r = rstd[n * groups + g];
                double a = 0.0, b = 0.0;
                for (long c = g * per_group; c < (g + 1) * per_group; ++c) {
                    a += weight[c] * sum_dy[c];
                    b += weight[c] * (sum_dyx[c] - m * sum_dy[c]);
                }
                a /= count;
                b /= count;
                for (long c = g * per_group; c < (g + 1) * per_group; ++c) {
                    k_dy[c] = (float)(r * weight[c]);
                    k_x[c] = (float)(-r * r * r * b);
                    k_0[c] = (float)(r * r * r * b * m - r * a);
                    dweight_parts[n * channels + c] = (float)(r * (sum_dyx[c] - m * sum_dy[c]));
                    dbias_parts[n * channels + c] = (float)sum_dy[c];
                }
            }
            /* Pass 2 */
            for (long p = 0; p < pixels; ++p) {
                const float *xp = xn + p * channels;
                float *dp = dn + p * channels;
                for (long c = 0; c < channels; ++c) dp[c] = dp[c] * k_dy[c] + xp[c] * k_x[c] + k_0[c];
            }
        }
    }
}
