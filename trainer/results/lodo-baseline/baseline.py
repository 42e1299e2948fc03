"""Non-learned baseline under leave-one-database-out on PhysioNet 2016: ridge logistic regression on
per-band envelope statistics of the pcg-train features (ln power, 48 rows 31-398 Hz, 31.25 frames/s),
grouped into 6 bands. Is LODO AUROC ~0.6 the network or the data?

    python trainer/results/lodo-baseline/baseline.py ../shared/data/physionet2016 > trainer/results/lodo-baseline/results.txt

Features per band (centred on the recording's median): std, 95th and 5th percentiles, interquartile
range, skewness (envelope statistics); share of the envelope's modulation power in 0.5-3, 3-8,
8-15.6 Hz and the autocorrelation peak over 0.3-2 s lags (rhythm); correlation between band
envelopes; and, as a control, the band means (the device's colouring). Training samples weighted
so databases and classes weigh the same (as pcg-train), features standardised on the training
databases only. Every feature set x ridge combination is printed: the spread is the result.
"""
import sys
from pathlib import Path

import numpy as np

from runtime.dsp.config import FrontEndConfig
from trainer.crossval import load_labelled
from trainer.folds import k_fold
from trainer.metrics import auroc, bootstrap_ci

examples, _, _ = load_labelled(Path(sys.argv[1]), "outcome", Path("runs/feature-cache"), FrontEndConfig())
rec = [next(r for recs in e.site_features for r in recs) for e in examples]
y = np.array([e.outcome for e in examples])
g = np.array([e.group for e in examples])
fps = 31.25
def feats(x, nb=6, band_rows=48):
    x=x[:band_rows]
    nf=x.shape[0]
    out={}
    # bands in linear power
    edges=np.linspace(0,nf,nb+1).astype(int)
    P=np.exp(x)
    E=np.stack([np.log(P[edges[i]:edges[i+1]].mean(0)+1e-10) for i in range(nb)])  # [nb,T]
    Ec=E-np.median(E,axis=1,keepdims=True)
    out['std']=Ec.std(1)
    out['p95']=np.percentile(Ec,95,axis=1)
    out['p5']=np.percentile(Ec,5,axis=1)
    out['p75_25']=np.percentile(Ec,75,axis=1)-np.percentile(Ec,25,axis=1)
    m=Ec-Ec.mean(1,keepdims=True)
    out['skew']=(m**3).mean(1)/(m.std(1)**3+1e-6)
    # modulation spectrum
    T=E.shape[1]
    spec=np.abs(np.fft.rfft(m*np.hanning(T),axis=1))**2
    fr=np.fft.rfftfreq(T,1/fps)
    tot=spec[:,(fr>0.3)].sum(1)+1e-9
    for lo,hi in [(0.5,3),(3,8),(8,15.6)]:
        out[f'mod{lo}']=np.log(spec[:,(fr>=lo)&(fr<hi)].sum(1)/tot+1e-9)
    # periodicity: autocorr peak over lags 0.3..2 s
    ac=np.fft.irfft(np.abs(np.fft.rfft(m,n=2*T,axis=1))**2,axis=1)[:,:T]
    ac=ac/ (ac[:,:1]+1e-9)
    l0,l1=int(0.3*fps),min(int(2*fps),T-1)
    out['acpk']=ac[:,l0:l1].max(1)
    # inter-band correlation of envelopes (structure)
    C=np.corrcoef(m)
    out['corr']=C[np.triu_indices(nb,1)]
    # spectral shape (device colouring)
    sh=E.mean(1); out['shape']=sh-sh.mean()
    return out
allf=[feats(r) for r in rec]
def mat(keys):
    return np.stack([np.concatenate([f[k] for k in keys]) for f in allf])
def logreg(X,y,w,lam=1.0,iters=50):
    Xb=np.hstack([X,np.ones((len(X),1))]); beta=np.zeros(Xb.shape[1])
    R=lam*np.eye(Xb.shape[1]); R[-1,-1]=0
    for _ in range(iters):
        p=1/(1+np.exp(-Xb@beta)); Wd=w*p*(1-p)
        H=Xb.T@(Xb*Wd[:,None])+R; gr=Xb.T@(w*(p-y))+R@beta
        beta-=np.linalg.solve(H,gr)
    return beta
def weights(y,g):
    w=np.zeros(len(y))
    for gg in set(g):
        for c in (0,1):
            m=(g==gg)&(y==c)
            if m.any(): w[m]=1.0/m.sum()
    return w/w.mean()
def lodo(X,lam=1.0,balance=True):
    s=np.zeros(len(y)); per={}
    for db in sorted(set(g)):
        te=g==db; tr=~te
        mu=X[tr].mean(0); sd=X[tr].std(0)+1e-6
        Xt=(X-mu)/sd
        w=weights(y[tr],g[tr]) if balance else np.ones(tr.sum())
        b=logreg(Xt[tr],y[tr],w,lam)
        s[te]=np.hstack([Xt[te],np.ones((te.sum(),1))])@b
        per[db]=auroc(y[te],s[te])
    return auroc(y,s), per, s
sets={'all-no-shape':['std','p95','p5','p75_25','skew','mod0.5','mod3','mod8','acpk','corr'],
'all+shape':['std','p95','p5','p75_25','skew','mod0.5','mod3','mod8','acpk','corr','shape'],
'shape-only':['shape'],'mod+ac':['mod0.5','mod3','mod8','acpk'],'envstats':['std','p95','p5','p75_25','skew']}
for name,keys in sets.items():
    X=mat(keys)
    for lam in (0.1,10.0,100.0):
        a,per,s=lodo(X,lam)
        print(f'{name:14s} lam={lam:6.1f} pooled {a:.3f}', ' '.join(f'{k}:{v:.3f}' for k,v in per.items()))
# for contrast, the same features under a random split (stratified by database and class)
X = mat(sets["all-no-shape"])
folds = k_fold(y, g, 5, seed=0)
s = np.zeros(len(y))
for f in folds:
    tr = np.concatenate([f.train, f.validation])
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6
    b = logreg((X[tr] - mu) / sd, y[tr], weights(y[tr], g[tr]), 10.0)
    s[f.test] = np.hstack([(X[f.test] - mu) / sd, np.ones((len(f.test), 1))]) @ b
print("random 5-fold, all-no-shape, lam=10: pooled %.3f" % auroc(y, s), " ".join(f"{k}:{auroc(y[g == k], s[g == k]):.3f}" for k in sorted(set(g))))
a, per, s = lodo(X, 10.0)
print("LODO all-no-shape lam=10: 95%% CI [%.3f, %.3f]" % tuple(bootstrap_ci(auroc, y, s)))
