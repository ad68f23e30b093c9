(function(){
// one viewer per data element: the t-SNE grid (#alviz-tsne into #tv) and the t-SNE strip across
// epochs (#alviz-tsne-strip into #tv-strip) each get their own panels, legend and hover; the script
// may be inlined after each of them: a viewer already drawn is left alone
function viewer(el,root){
var D=JSON.parse(el.textContent),N=D.labels.length;
var hidden={},hover=-1,views=[],thumbs=null,pending=false;
if(D.thumb){var b=atob(D.thumb.b64);thumbs=new Uint8Array(b.length);for(var i=0;i<b.length;i++)thumbs[i]=b.charCodeAt(i);}
var legend=document.createElement('div');legend.className='legend';
legend.appendChild(document.createTextNode('classes (click to hide/show): '));
D.classNames.forEach(function(n,c){var s=document.createElement('span');
 s.innerHTML='<i style="background:'+D.colors[c]+'"></i>';s.appendChild(document.createTextNode(n));
 s.onclick=function(){hidden[c]=!hidden[c];s.className=hidden[c]?'off':'';redraw();};legend.appendChild(s);});
root.appendChild(legend);
var grid=document.createElement('div');grid.className='grid';
grid.style.gridTemplateColumns='1.4em repeat('+D.cols.length+',minmax(0,1fr))';root.appendChild(grid);
var tip=document.createElement('div');tip.className='tip';root.appendChild(tip);
grid.appendChild(document.createElement('div'));
D.cols.forEach(function(c){var t=document.createElement('div');t.className='ttl';t.textContent=(D.colLabel||'position')+' '+c;grid.appendChild(t);});
D.rows.forEach(function(r,ri){
 var rn=document.createElement('div');rn.className='rowname';rn.textContent=r;grid.appendChild(rn);
 D.cols.forEach(function(c,ci){
  var p=D.panels[ri*D.cols.length+ci],cell=document.createElement('div');grid.appendChild(cell);
  var t=document.createElement('div');t.className='ttl';t.textContent=p?p.title:'n/a';cell.appendChild(t);
  if(!p)return;
  var cv=document.createElement('canvas');cell.appendChild(cv);
  var x0=Infinity,x1=-Infinity,y0=Infinity,y1=-Infinity;
  for(var i=0;i<N;i++){x0=Math.min(x0,p.x[i]);x1=Math.max(x1,p.x[i]);y0=Math.min(y0,p.y[i]);y1=Math.max(y1,p.y[i]);}
  var v={p:p,cv:cv,cx:(x0+x1)/2,cy:(y0+y1)/2,span:Math.max(x1-x0,y1-y0,1e-9)*1.08,z:1};
  v.home=[v.cx,v.cy];views.push(v);attach(v);});});
function size(v){var r=v.cv.getBoundingClientRect(),d=window.devicePixelRatio||1;
 var w=Math.max(1,Math.round(r.width*d));if(v.cv.width!==w){v.cv.width=w;v.cv.height=w;}return w;}
function k(v){return v.cv.width/v.span*v.z;}
function px(v,i){var s=k(v),w=v.cv.width;return[w/2+(v.p.x[i]-v.cx)*s,w/2-(v.p.y[i]-v.cy)*s];}
function draw(v){var w=size(v),g=v.cv.getContext('2d'),d=window.devicePixelRatio||1,r=Math.max(1.2,D.pointSize*d);
 g.clearRect(0,0,w,w);
 for(var i=0;i<N;i++){var c=D.labels[i];if(hidden[c])continue;var q=px(v,i);
  if(q[0]<-r||q[1]<-r||q[0]>w+r||q[1]>w+r)continue;g.fillStyle=D.colors[c];g.fillRect(q[0]-r,q[1]-r,2*r,2*r);}
 if(hover>=0){var q=px(v,hover);g.lineWidth=2*d;g.strokeStyle='#000';g.beginPath();g.arc(q[0],q[1],6*d,0,7);g.stroke();}}
function redraw(){if(pending)return;pending=true;requestAnimationFrame(function(){pending=false;views.forEach(draw);});}
function local(v,e){var r=v.cv.getBoundingClientRect(),d=v.cv.width/r.width;return[(e.clientX-r.left)*d,(e.clientY-r.top)*d];}
function showTip(e){if(hover<0){tip.style.display='none';return;}var c=D.labels[hover];
 tip.innerHTML='';var a=document.createElement('div');
 a.innerHTML='<b style="color:'+D.colors[c]+'">&#9679;</b> ';
 a.appendChild(document.createTextNode('class '+D.classNames[c]+' \u00b7 sample id '+D.ids[hover]));tip.appendChild(a);
 if(thumbs){var h=D.thumb.h,w=D.thumb.w,ch=D.thumb.c,tc=document.createElement('canvas');tc.width=w;tc.height=h;
  var g=tc.getContext('2d'),im=g.createImageData(w,h),o=hover*h*w*ch;
  for(var j=0;j<h*w;j++){var R=thumbs[o+j*ch],G=ch>=3?thumbs[o+j*ch+1]:R,B=ch>=3?thumbs[o+j*ch+2]:R;
   im.data[4*j]=R;im.data[4*j+1]=G;im.data[4*j+2]=B;im.data[4*j+3]=255;}
  g.putImageData(im,0,0);tip.appendChild(tc);}
 tip.style.display='block';tip.style.left=(e.clientX+14)+'px';tip.style.top=(e.clientY+10)+'px';}
function attach(v){var drag=null;
 v.cv.addEventListener('wheel',function(e){e.preventDefault();var m=local(v,e),s=k(v),w=v.cv.width;
  var dx=v.cx+(m[0]-w/2)/s,dy=v.cy-(m[1]-w/2)/s;v.z*=Math.exp(-e.deltaY*0.0015);v.z=Math.min(Math.max(v.z,0.5),200);
  s=k(v);v.cx=dx-(m[0]-w/2)/s;v.cy=dy+(m[1]-w/2)/s;redraw();},{passive:false});
 v.cv.addEventListener('pointerdown',function(e){drag=[e.clientX,e.clientY];v.cv.setPointerCapture(e.pointerId);});
 v.cv.addEventListener('pointerup',function(){drag=null;});
 v.cv.addEventListener('pointermove',function(e){
  if(drag){var r=v.cv.getBoundingClientRect(),d=v.cv.width/r.width,s=k(v);
   v.cx-=(e.clientX-drag[0])*d/s;v.cy+=(e.clientY-drag[1])*d/s;drag=[e.clientX,e.clientY];redraw();return;}
  var m=local(v,e),best=-1,bd=Infinity,lim=Math.pow(8*(window.devicePixelRatio||1),2);
  for(var i=0;i<N;i++){if(hidden[D.labels[i]])continue;var q=px(v,i),dd=(q[0]-m[0])*(q[0]-m[0])+(q[1]-m[1])*(q[1]-m[1]);
   if(dd<bd){bd=dd;best=i;}}
  var nh=bd<=lim?best:-1;if(nh!==hover){hover=nh;redraw();}showTip(e);});
 v.cv.addEventListener('pointerleave',function(){if(hover>=0){hover=-1;redraw();}tip.style.display='none';});
 v.cv.addEventListener('dblclick',function(){v.z=1;v.cx=v.home[0];v.cy=v.home[1];redraw();});}
window.addEventListener('resize',redraw);redraw();
}
[['alviz-tsne','tv'],['alviz-tsne-strip','tv-strip']].forEach(function(p){
 var el=document.getElementById(p[0]),r=document.getElementById(p[1]);
 if(el&&r&&!r.getAttribute('data-ready')){r.setAttribute('data-ready','1');viewer(el,r);}});
})();
